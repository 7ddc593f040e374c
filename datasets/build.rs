//! Embeds the bundled sample (`samples/fashion-mnist-test-60/<class>/*.png`) into the library,
//! so an installed binary runs its main job from any directory.

use std::fmt::Write;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/fashion-mnist-test-60");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut classes: Vec<_> = std::fs::read_dir(&root)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    classes.retain(|p: &std::path::PathBuf| p.is_dir());
    classes.sort();
    let mut out =
        String::from("/// (class, file name, PNG bytes), classes and files sorted by name.\n");
    out.push_str("pub const SAMPLE: &[(&str, &str, &[u8])] = &[\n");
    for dir in &classes {
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p: &std::path::PathBuf| p.extension().is_some_and(|e| e == "png"));
        files.sort();
        let class = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for f in files {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    ({class:?}, {name:?}, include_bytes!({:?})),",
                f.display().to_string()
            );
        }
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("sample.rs");
    std::fs::write(dest, out).expect("writing the embedded sample list");
}
