//! A reader for PyTorch's **legacy** (pre-1.6, non-zip) `torch.save` format, the format of
//! torchvision's older published weights (e.g. `mobilenet_v2-b0353104.pth`).
//!
//! candle reads only the zip format (`candle_core::pickle::read_all`); a legacy file is instead
//! five pickles back to back, then the raw storages (layout from `torch/serialization.py`,
//! `_legacy_save` / `_legacy_load`):
//!
//! 1. the magic number `0x1950a86a20f9469cfc6c` (a pickled long),
//! 2. the protocol version `1001`,
//! 3. a `sys_info` dict (`little_endian`, `type_sizes`, ...),
//! 4. the object itself, here an `OrderedDict` name -> tensor, each tensor a
//!    `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` whose storage is a
//!    persistent id `('storage', torch.FloatStorage, key, location, numel, view_metadata)`,
//! 5. the list of storage keys, in the order the storages follow;
//!
//! then, for each key of that list: an 8-byte little-endian element count and the storage's
//! raw little-endian bytes.
//!
//! Each pickle is read with candle's own unpickler ([`candle_core::pickle::Stack`]) and each
//! entry interpreted with [`candle_core::pickle::Object::into_tensor_info`], so both formats
//! agree on what a tensor is. A zip-format file (it starts with `PK`) is handed to
//! `candle_core::pickle::read_all`, so [`read_legacy_pth`] reads either format.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;

use candle_core::pickle::{Object, Stack, TensorInfo};
use candle_core::{DType, Device, Tensor};

use crate::{io_err, Result, SpaeError};

/// The first pickle of every legacy `torch.save` file (`torch.serialization.MAGIC_NUMBER`).
const MAGIC_NUMBER: i128 = 0x1950a86a20f9469cfc6c;
/// The second pickle (`torch.serialization.PROTOCOL_VERSION`).
const PROTOCOL_VERSION: i64 = 1001;
/// `into_tensor_info` names a storage "{dir}/{key}"; this is the dir we pass and strip again.
const STORAGE_DIR: &str = "storage";

fn bad(path: &Path, reason: impl std::fmt::Display) -> SpaeError {
    SpaeError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Read every tensor of a PyTorch checkpoint holding a state dict (name -> tensor).
///
/// Legacy (non-zip) files are parsed here; zip-format files (PyTorch >= 1.6 default) are read
/// by candle's `candle_core::pickle::read_all`. Floating-point tensors come back as f32;
/// integer tensors (e.g. BatchNorm's `num_batches_tracked`, a `LongStorage`) keep their dtype.
/// Entries of the dict that are not tensors (e.g. `_metadata`) are skipped.
///
/// Every failure names `path` and what is wrong: not a legacy `torch.save` file (bad magic or
/// version), a big-endian file, a tensor whose storage key is not among the stored keys, a
/// storage whose stored size differs from the size the pickle declares, a tensor reaching past
/// its storage, or a file that ends early.
pub fn read_legacy_pth(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    if bytes.starts_with(b"PK") {
        return read_zip(path, device);
    }
    let mut r = Cursor::new(bytes.as_slice());
    let not_legacy = || bad(path, "not a legacy torch.save file (bad magic number)");

    // (1) magic number, (2) protocol version.
    if read_magic(&mut r) != Some(MAGIC_NUMBER) {
        return Err(not_legacy());
    }
    let version = read_pickle(&mut r).map_err(|e| bad(path, format!("protocol version: {e}")))?;
    if version.clone().int_or_long().ok() != Some(PROTOCOL_VERSION) {
        return Err(bad(
            path,
            format!(
                "unsupported torch.save protocol version {version:?}, expected {PROTOCOL_VERSION}"
            ),
        ));
    }
    // (3) sys_info: the storages are raw machine bytes, so their byte order matters.
    let sys_info = read_pickle(&mut r).map_err(|e| bad(path, format!("sys_info: {e}")))?;
    check_little_endian(path, sys_info)?;
    // (4) the state dict.
    let obj = read_pickle(&mut r).map_err(|e| bad(path, format!("state dict: {e}")))?;
    let entries = match obj {
        Object::Dict(entries) => entries,
        other => {
            return Err(bad(
                path,
                format!(
                    "the saved object is not a dict of tensors but {}",
                    kind(&other)
                ),
            ))
        }
    };
    let mut infos = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        let label = match &name {
            Object::Unicode(s) => s.clone(),
            other => format!("{other:?}"),
        };
        check_no_view(path, &label, &value)?;
        let info = value
            .into_tensor_info(name, Path::new(STORAGE_DIR))
            .map_err(|e| bad(path, format!("tensor {label}: {e}")))?;
        if let Some(info) = info {
            infos.push(info);
        }
    }
    // (5) the storage keys, in file order.
    let keys = read_pickle(&mut r).map_err(|e| bad(path, format!("storage keys: {e}")))?;
    let keys: Vec<String> = match keys {
        Object::List(items) => items
            .into_iter()
            .map(|k| {
                k.unicode()
                    .map_err(|o| bad(path, format!("storage key {o:?} is not a string")))
            })
            .collect::<Result<_>>()?,
        other => {
            return Err(bad(
                path,
                format!("storage keys: expected a list, found {}", kind(&other)),
            ))
        }
    };

    // What the pickle says each storage holds: dtype and element count.
    let mut declared: HashMap<&str, (DType, usize)> = HashMap::new();
    for info in &infos {
        let key = storage_key(info);
        let (dtype, numel) = (info.dtype, info.storage_size);
        if let Some(&prev) = declared.get(key) {
            if prev != (dtype, numel) {
                return Err(bad(
                    path,
                    format!(
                        "storage {key} is declared as {prev:?} and as {:?}",
                        (dtype, numel)
                    ),
                ));
            }
        }
        declared.insert(key, (dtype, numel));
    }

    // The storages, in the order of the key list.
    let data = &bytes[..];
    let mut pos = r.position() as usize;
    let mut storages: HashMap<&str, &[u8]> = HashMap::new();
    for key in &keys {
        let header = data
            .get(pos..pos + 8)
            .ok_or_else(|| bad(path, format!("truncated: storage {key} has no size header")))?;
        let mut n = [0u8; 8];
        n.copy_from_slice(header);
        let numel = u64::from_le_bytes(n) as usize;
        pos += 8;
        let Some(&(dtype, want)) = declared.get(key.as_str()) else {
            // A storage no tensor of the dict uses: nothing declares its element size.
            return Err(bad(
                path,
                format!("storage {key} is stored but no tensor refers to it"),
            ));
        };
        if numel != want {
            return Err(bad(
                path,
                format!("storage {key} holds {numel} elements, the pickle declares {want}"),
            ));
        }
        let end = numel
            .checked_mul(dtype.size_in_bytes())
            .and_then(|len| pos.checked_add(len));
        let raw = end.and_then(|end| data.get(pos..end)).ok_or_else(|| {
            let len = numel.saturating_mul(dtype.size_in_bytes());
            bad(
                path,
                format!(
                    "truncated storage {key}: {len} bytes expected, {} left",
                    data.len().saturating_sub(pos)
                ),
            )
        })?;
        storages.insert(key.as_str(), raw);
        pos += raw.len();
    }

    let mut out = HashMap::with_capacity(infos.len());
    for info in &infos {
        let key = storage_key(info);
        let raw = storages.get(key).ok_or_else(|| {
            bad(
                path,
                format!(
                    "tensor {} refers to unknown storage key {key} (not in the stored key list)",
                    info.name
                ),
            )
        })?;
        let t = tensor_from_storage(path, info, raw, device)?;
        out.insert(info.name.clone(), t);
    }
    Ok(out)
}

fn read_zip(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let tensors = candle_core::pickle::read_all(path)
        .map_err(|e| bad(path, format!("zip-format torch.save file: {e}")))?;
    tensors
        .into_iter()
        .map(|(name, t)| {
            let t = to_f32_if_float(t)
                .and_then(|t| Ok(t.to_device(device)?))
                .map_err(|e| bad(path, format!("tensor {name}: {e}")))?;
            Ok((name, t))
        })
        .collect()
}

fn to_f32_if_float(t: Tensor) -> Result<Tensor> {
    Ok(if t.dtype().is_float() {
        t.to_dtype(DType::F32)?
    } else {
        t
    })
}

/// One pickle, up to and including its STOP opcode.
fn read_pickle(r: &mut Cursor<&[u8]>) -> candle_core::Result<Object> {
    let mut stack = Stack::empty();
    stack.read_loop(r)?;
    stack.finalize()
}

/// The first pickle: `[PROTO v] LONG1 n <n bytes, little-endian two's complement> STOP`.
/// Read here rather than by candle's unpickler, which accumulates LONG1 into an i64 and so
/// cannot hold the 10-byte magic number (its shifts past 64 bits overflow).
fn read_magic(r: &mut Cursor<&[u8]>) -> Option<i128> {
    let data = *r.get_ref();
    let mut pos = r.position() as usize;
    if *data.get(pos)? == 0x80 {
        pos += 2; // PROTO and its version byte
    }
    if *data.get(pos)? != 0x8a {
        return None; // not LONG1
    }
    let n = *data.get(pos + 1)? as usize;
    if n == 0 || n > 16 {
        return None;
    }
    let digits = data.get(pos + 2..pos + 2 + n)?;
    if *data.get(pos + 2 + n)? != b'.' {
        return None; // not followed by STOP
    }
    let mut v: i128 = 0;
    for (i, &b) in digits.iter().enumerate() {
        v |= (b as i128) << (8 * i);
    }
    // Sign-extend a negative number (the magic is positive; this only keeps the decoding
    // honest for other values).
    if n < 16 && digits[n - 1] & 0x80 != 0 {
        v -= 1i128 << (8 * n);
    }
    r.set_position((pos + 3 + n) as u64);
    Some(v)
}

fn check_little_endian(path: &Path, sys_info: Object) -> Result<()> {
    let entries = sys_info
        .dict()
        .map_err(|o| bad(path, format!("sys_info is not a dict: {}", kind(&o))))?;
    for (k, v) in entries {
        if k == Object::Unicode("little_endian".into()) {
            return match v {
                Object::Bool(true) => Ok(()),
                Object::Bool(false) => {
                    Err(bad(path, "big-endian torch.save files are not supported"))
                }
                other => Err(bad(path, format!("sys_info little_endian is {other:?}"))),
            };
        }
    }
    Err(bad(path, "sys_info has no little_endian entry"))
}

/// Legacy files can store a tensor on a *view* of a storage (the persistent id's sixth field,
/// `view_metadata`, is then `(view_key, offset, size)`); `into_tensor_info` ignores that
/// field, so reject such tensors rather than read the wrong bytes. torchvision's weights
/// never use views.
fn check_no_view(path: &Path, name: &str, value: &Object) -> Result<()> {
    let Object::Reduce { args, .. } = value else {
        return Ok(());
    };
    let Object::Tuple(args) = args.as_ref() else {
        return Ok(());
    };
    let Some(Object::PersistentLoad(pid)) = args.first() else {
        return Ok(());
    };
    if let Object::Tuple(fields) = pid.as_ref() {
        if let Some(view) = fields.get(5) {
            if *view != Object::None {
                return Err(bad(
                    path,
                    format!("tensor {name} is stored on a storage view {view:?}, not supported"),
                ));
            }
        }
    }
    Ok(())
}

fn storage_key(info: &TensorInfo) -> &str {
    let p = info.path.as_str();
    p.strip_prefix(STORAGE_DIR)
        .and_then(|s| s.strip_prefix('/'))
        .unwrap_or(p)
}

/// Gather the tensor's elements (any strides) out of its storage bytes, checking that every
/// element lies inside the storage.
fn tensor_from_storage(
    path: &Path,
    info: &TensorInfo,
    raw: &[u8],
    device: &Device,
) -> Result<Tensor> {
    let es = info.dtype.size_in_bytes();
    let layout = &info.layout;
    let dims = layout.dims().to_vec();
    let strides = layout.stride().to_vec();
    let start = layout.start_offset() / es;
    let count: usize = dims.iter().product();
    let storage_len = raw.len() / es;
    let out_of_range = || {
        bad(
            path,
            format!(
                "tensor {} (shape {dims:?}, strides {strides:?}, offset {start}) reaches past \
                 its storage of {storage_len} elements",
                info.name
            ),
        )
    };
    // The largest element offset the layout touches.
    let last = if count == 0 {
        start
    } else {
        dims.iter()
            .zip(&strides)
            .try_fold(start, |acc, (&d, &s)| {
                acc.checked_add((d - 1).checked_mul(s)?)
            })
            .ok_or_else(out_of_range)?
    };
    if count > 0 && last >= storage_len {
        return Err(out_of_range());
    }
    let bytes: Vec<u8> = if count == 0 {
        Vec::new()
    } else if layout.is_contiguous() {
        raw[start * es..(start + count) * es].to_vec()
    } else {
        let mut buf = Vec::with_capacity(count * es);
        let mut idx = vec![0usize; dims.len()];
        for _ in 0..count {
            let off = start + idx.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>();
            buf.extend_from_slice(&raw[off * es..(off + 1) * es]);
            // Advance the row-major multi-index.
            for d in (0..dims.len()).rev() {
                idx[d] += 1;
                if idx[d] < dims[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        buf
    };
    // The storages are little-endian (checked in sys_info); candle reads native order.
    let t = Tensor::from_raw_buffer(&bytes, info.dtype, &dims, &Device::Cpu)
        .map_err(|e| bad(path, format!("tensor {}: {e}", info.name)))?;
    to_f32_if_float(t)
        .and_then(|t| Ok(t.to_device(device)?))
        .map_err(|e| bad(path, format!("tensor {}: {e}", info.name)))
}

fn kind(o: &Object) -> &'static str {
    match o {
        Object::Class { .. } => "a class",
        Object::Int(_) | Object::Long(_) => "an integer",
        Object::Float(_) => "a float",
        Object::Unicode(_) => "a string",
        Object::Bool(_) => "a bool",
        Object::None => "None",
        Object::Tuple(_) => "a tuple",
        Object::List(_) => "a list",
        Object::Mark => "a mark",
        Object::Dict(_) => "a dict",
        Object::Reduce { .. } | Object::Build { .. } => "an object",
        Object::PersistentLoad(_) => "a persistent id",
    }
}
