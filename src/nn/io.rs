//! Saving and loading a model's parameters in the safetensors format: an 8-byte
//! little-endian header length, a JSON header mapping each tensor name to its dtype, shape
//! and byte range, then the little-endian data. Names are `"{layer}.{param}"`.

use super::Sequential;
use crate::error::{Error, Result};
use crate::Tensor;
use serde_json::{json, Map, Value};
use std::path::Path;

/// Largest header accepted (100 MiB, as the format's reference implementation).
const MAX_HEADER: u64 = 100 << 20;

/// Writes every parameter of `model` to `path`, with `metadata` in the header.
///
/// # Errors
/// [`Error::Io`] if the file cannot be written.
pub fn save_safetensors(model: &mut Sequential, path: &Path, metadata: &[(&str, &str)]) -> Result<()> {
    std::fs::write(path, safetensors_bytes(model, metadata)).map_err(|e| Error::io(path, e))
}

/// The bytes [`save_safetensors`] writes.
pub fn safetensors_bytes(model: &mut Sequential, metadata: &[(&str, &str)]) -> Vec<u8> {
    let params = model.named_params();
    let mut header = Map::new();
    let meta: Map<String, Value> = metadata.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    header.insert("__metadata__".into(), Value::Object(meta));
    let mut offset = 0usize;
    for (name, t) in &params {
        let bytes = t.len() * 4;
        header.insert(
            name.clone(),
            json!({"dtype": "F32", "shape": t.shape(), "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut head = Value::Object(header).to_string().into_bytes();
    // Pad the header with spaces so the data starts 8-byte aligned.
    while !(head.len() + 8).is_multiple_of(8) {
        head.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + head.len() + offset);
    out.extend((head.len() as u64).to_le_bytes());
    out.extend(&head);
    for (_, t) in &params {
        t.data().iter().for_each(|v| out.extend(v.to_le_bytes()));
    }
    out
}

/// Reads parameters saved by [`save_safetensors`] into `model`, which must have the same
/// architecture; returns the file's metadata.
///
/// # Errors
/// [`Error::Io`] if unreadable; [`Error::Format`] for a truncated file, a bad header, a
/// dtype other than F32, byte ranges outside the data or of the wrong length; and
/// [`Error::Shape`] naming the tensor when a parameter is missing or has another shape
/// (weights for another model).
pub fn load_safetensors(model: &mut Sequential, path: &Path) -> Result<Vec<(String, String)>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    load_safetensors_bytes(model, &bytes, &path.display().to_string())
}

/// [`load_safetensors`] from bytes in memory; `what` names them in errors.
///
/// # Errors
/// As [`load_safetensors`], without the I/O.
pub fn load_safetensors_bytes(model: &mut Sequential, bytes: &[u8], what: &str) -> Result<Vec<(String, String)>> {
    let bad = |reason: String| Error::format(format!("safetensors file {what}"), reason);
    let (len, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| bad(format!("{} bytes, shorter than the 8-byte header length", bytes.len())))?;
    let len = u64::from_le_bytes(*len);
    if len > MAX_HEADER || len > rest.len() as u64 {
        return Err(bad(format!("header length {len} exceeds the file ({} bytes after it)", rest.len())));
    }
    let (head, data) = rest.split_at(len as usize);
    let header: Map<String, Value> = match serde_json::from_slice(head) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(bad("header is not a JSON object".into())),
        Err(e) => return Err(bad(format!("header is not valid JSON: {e}"))),
    };
    let metadata = match header.get("__metadata__") {
        Some(Value::Object(m)) => {
            m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect()
        }
        _ => Vec::new(),
    };
    // Read and check everything before changing the model.
    let mut values = Vec::new();
    for (name, current) in model.named_params() {
        let entry = header.get(&name).ok_or_else(|| {
            Error::shape(format!("parameter {name}"), format!("{:?} in the file", current.shape()), &[])
        })?;
        let dtype = entry.get("dtype").and_then(Value::as_str).unwrap_or("?");
        if dtype != "F32" {
            return Err(bad(format!("{name}: dtype {dtype}, expected F32")));
        }
        let shape: Option<Vec<usize>> = entry
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect());
        let shape = shape.ok_or_else(|| bad(format!("{name}: missing or malformed shape")))?;
        if shape != current.shape() {
            return Err(Error::shape(
                format!("parameter {name} in {what}"),
                format!("{:?} (this model's)", current.shape()),
                &shape,
            ));
        }
        let offs: Option<Vec<usize>> = entry
            .get("data_offsets")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect());
        let [begin, end] = offs.as_deref().unwrap_or(&[]) else {
            return Err(bad(format!("{name}: malformed data_offsets")));
        };
        let (begin, end) = (*begin, *end);
        if begin > end || end > data.len() || end - begin != current.len() * 4 {
            return Err(bad(format!(
                "{name}: byte range {begin}..{end} does not hold {} floats inside {} data bytes",
                current.len(),
                data.len()
            )));
        }
        let vals = data[begin..end].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        values.push(Tensor::new(vals, &shape)?);
    }
    for (p, v) in model.params().into_iter().zip(values) {
        *p.value = v;
    }
    Ok(metadata)
}
