//! Labelled image files read on demand, and the mini-ImageNet layout.
//!
//! mini-ImageNet (Vinyals et al. 2016, the Ravi & Larochelle 2017 split) is `root/images/*.jpg`
//! with `root/{train,val,test}.csv` of `filename,label` rows, the label a WordNet id. A few-shot
//! evaluation reads a few hundred of the 12,000 test images, so images are decoded when asked
//! for, not up front; every listed file is checked to exist when the split is opened.
//!
//! "Real-Name" mini-ImageNet (Frozen, Tsimpoukelli et al. 2021) shows the LLM class names, not
//! WordNet ids: the names of the val and test classes are built in; `root/class_names.csv`
//! (`wnid,name` rows) adds or overrides names, e.g. for the 64 train classes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::{DataError, Result};

/// Image files with integer labels and class names; pixels are read by [`ImageFiles::load`].
#[derive(Debug, Clone)]
pub struct ImageFiles {
    pub name: String,
    pub paths: Vec<PathBuf>,
    pub labels: Vec<u32>,
    pub class_names: Vec<String>,
}

impl ImageFiles {
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Images `indices` as a (B, C, S, S) f32 tensor in [0, 1], resized (shorter side) and
    /// centre-cropped to `size`; an unreadable file is an error naming it.
    pub fn load(
        &self,
        indices: &[usize],
        channels: usize,
        size: usize,
        device: &Device,
    ) -> Result<Tensor> {
        let mut images = Vec::with_capacity(indices.len());
        for &i in indices {
            let path = self.paths.get(i).ok_or_else(|| DataError::Layout {
                path: PathBuf::from(&self.name),
                reason: format!("no image {i} ({} images)", self.paths.len()),
            })?;
            images.push(spae_core::imageio::load_image(path, channels, size)?);
        }
        Ok(Tensor::stack(&images, 0)?.to_device(device)?)
    }
}

/// WordNet id -> name of the 16 val and 20 test classes of the Ravi-Larochelle split, as one
/// or two plain words an LLM can answer with.
const MINI_IMAGENET_NAMES: &[(&str, &str)] = &[
    // test
    ("n01930112", "nematode"),
    ("n01981276", "king crab"),
    ("n02099601", "golden retriever"),
    ("n02110063", "malamute"),
    ("n02110341", "dalmatian"),
    ("n02116738", "african hunting dog"),
    ("n02129165", "lion"),
    ("n02219486", "ant"),
    ("n02443484", "black-footed ferret"),
    ("n02871525", "bookshop"),
    ("n03127925", "crate"),
    ("n03146219", "cuirass"),
    ("n03272010", "electric guitar"),
    ("n03544143", "hourglass"),
    ("n03775546", "mixing bowl"),
    ("n04146614", "school bus"),
    ("n04149813", "scoreboard"),
    ("n04418357", "theater curtain"),
    ("n04522168", "vase"),
    ("n07613480", "trifle"),
    // val
    ("n01855672", "goose"),
    ("n02091244", "ibizan hound"),
    ("n02114548", "white wolf"),
    ("n02138441", "meerkat"),
    ("n02174001", "rhinoceros beetle"),
    ("n02950826", "cannon"),
    ("n02971356", "carton"),
    ("n02981792", "catamaran"),
    ("n03075370", "combination lock"),
    ("n03417042", "garbage truck"),
    ("n03535780", "horizontal bar"),
    ("n03584254", "ipod"),
    ("n03770439", "miniskirt"),
    ("n03773504", "missile"),
    ("n03980874", "poncho"),
    ("n09256479", "coral reef"),
];

/// The `split` (`train`, `val` or `test`) of a mini-ImageNet directory.
pub fn mini_imagenet(root: &Path, split: &str) -> Result<ImageFiles> {
    if !matches!(split, "train" | "val" | "test") {
        return Err(DataError::Layout {
            path: root.to_path_buf(),
            reason: format!("split {split:?}: mini-ImageNet has train, val and test"),
        });
    }
    let csv = root.join(format!("{split}.csv"));
    let text = std::fs::read_to_string(&csv).map_err(|source| DataError::Io {
        path: csv.clone(),
        source,
    })?;
    let mut names: HashMap<String, String> = MINI_IMAGENET_NAMES
        .iter()
        .map(|(w, n)| (w.to_string(), n.to_string()))
        .collect();
    let names_csv = root.join("class_names.csv");
    if names_csv.is_file() {
        names.extend(read_pairs(&names_csv)?);
    }
    let images = root.join("images");
    let mut wnids: Vec<String> = Vec::new();
    let mut paths = Vec::new();
    let mut labels = Vec::new();
    for (filename, wnid) in parse_pairs(&csv, &text)? {
        let label = match wnids.iter().position(|w| *w == wnid) {
            Some(l) => l,
            None => {
                wnids.push(wnid);
                wnids.len() - 1
            }
        };
        let path = images.join(&filename);
        if !path.is_file() {
            return Err(DataError::Layout {
                path,
                reason: format!("listed in {} but missing", csv.display()),
            });
        }
        paths.push(path);
        labels.push(label as u32);
    }
    if paths.is_empty() {
        return Err(DataError::Layout {
            path: csv,
            reason: "no rows; expected `filename,label` lines".into(),
        });
    }
    let class_names = wnids
        .iter()
        .map(|w| {
            names.get(w).cloned().ok_or_else(|| DataError::Layout {
                path: names_csv.clone(),
                reason: format!("no name for class {w}: add a `{w},<name>` row"),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ImageFiles {
        name: format!("mini-imagenet-{split}"),
        paths,
        labels,
        class_names,
    })
}

fn read_pairs(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_pairs(path, &text)
}

/// Two-column CSV rows; a first row naming its columns (`filename,label`, `wnid,name`) is a header.
fn parse_pairs(path: &Path, text: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((a, b)) = line.split_once(',') else {
            return Err(DataError::Format {
                path: path.to_path_buf(),
                reason: format!("line {}: expected two comma-separated columns", i + 1),
            });
        };
        let (a, b) = (a.trim(), b.trim());
        if i == 0 && matches!(a, "filename" | "wnid" | "image") {
            continue;
        }
        out.push((a.to_string(), b.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, shade: u8) {
        image::GrayImage::from_pixel(10, 8, image::Luma([shade]))
            .save(path)
            .unwrap();
    }

    /// The exact layout: images/ plus split CSVs with a header, labels as WordNet ids.
    fn layout(dir: &Path) {
        std::fs::create_dir_all(dir.join("images")).unwrap();
        let mut csv = String::from("filename,label\n");
        for (k, wnid) in ["n02129165", "n04522168"].iter().enumerate() {
            for j in 0..3 {
                let f = format!("{wnid}0000000{j}.jpg");
                // PNG bytes under .jpg: decoders sniff the content, as mini-ImageNet users' tools do.
                write_png(&dir.join("images").join(&f), 40 * k as u8 + j);
                csv.push_str(&format!("{f},{wnid}\n"));
            }
        }
        std::fs::write(dir.join("test.csv"), csv).unwrap();
    }

    #[test]
    fn reads_the_test_split_with_real_names() {
        let dir = tempfile::tempdir().unwrap();
        layout(dir.path());
        let set = mini_imagenet(dir.path(), "test").unwrap();
        assert_eq!(set.len(), 6);
        assert_eq!(set.class_names, ["lion", "vase"]);
        assert_eq!(set.labels, [0, 0, 0, 1, 1, 1]);
        let t = set.load(&[0, 4], 3, 8, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[2, 3, 8, 8]);
    }

    #[test]
    fn missing_and_corrupt_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        layout(dir.path());
        let listed = dir.path().join("images/n0452216800000001.jpg");
        std::fs::write(&listed, b"not an image").unwrap();
        let set = mini_imagenet(dir.path(), "test").unwrap();
        let err = set.load(&[4], 1, 8, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("n0452216800000001.jpg"), "{err}");

        std::fs::remove_file(&listed).unwrap();
        let err = mini_imagenet(dir.path(), "test").unwrap_err().to_string();
        assert!(
            err.contains("n0452216800000001.jpg") && err.contains("missing"),
            "{err}"
        );
        let err = mini_imagenet(dir.path(), "val").unwrap_err().to_string();
        assert!(err.contains("val.csv"), "{err}");
    }

    #[test]
    fn unknown_classes_need_a_name_row() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("images")).unwrap();
        write_png(&dir.path().join("images/a.jpg"), 1);
        std::fs::write(
            dir.path().join("train.csv"),
            "filename,label\na.jpg,n99999999\n",
        )
        .unwrap();
        let err = mini_imagenet(dir.path(), "train").unwrap_err().to_string();
        assert!(
            err.contains("n99999999") && err.contains("class_names.csv"),
            "{err}"
        );
        std::fs::write(
            dir.path().join("class_names.csv"),
            "wnid,name\nn99999999,zebra\n",
        )
        .unwrap();
        let set = mini_imagenet(dir.path(), "train").unwrap();
        assert_eq!(set.class_names, ["zebra"]);
    }
}
