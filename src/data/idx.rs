//! The IDX format (LeCun's MNIST files): a 4-byte magic `00 00 <type> <rank>`, `rank`
//! big-endian `u32` dimensions, then the elements. Only unsigned bytes (type `0x08`) are
//! supported, as MNIST uses. A gzip stream (`1f 8b …`) is decompressed first.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

/// An IDX array of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// Elements, row-major.
    pub data: Vec<u8>,
}

/// Largest decompressed size accepted (1 GiB): larger claims are treated as corrupt rather
/// than allocated.
const MAX_BYTES: u64 = 1 << 30;

/// Parses IDX bytes (raw or gzip); `what` names the source in errors.
///
/// # Errors
/// [`Error::Format`] for a wrong magic, an unsupported element type, a rank of 0 or above
/// 4, dimensions whose product overflows, and data shorter or longer than the dimensions
/// say; a corrupt gzip stream.
///
/// ```
/// let bytes = [0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9];
/// let a = convkit::data::read_idx(&bytes, "example")?;
/// assert_eq!((a.dims, a.data), (vec![3], vec![7, 8, 9]));
/// assert!(convkit::data::read_idx(&bytes[..10], "example").is_err());
/// # Ok::<(), convkit::Error>(())
/// ```
pub fn read_idx(bytes: &[u8], what: &str) -> Result<IdxArray> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .take(MAX_BYTES + 1)
            .read_to_end(&mut raw)
            .map_err(|e| Error::format(what, format!("bad gzip stream: {e}")))?;
        if raw.len() as u64 > MAX_BYTES {
            return Err(Error::format(what, "decompresses to more than 1 GiB"));
        }
        return parse(&raw, what);
    }
    parse(bytes, what)
}

fn parse(bytes: &[u8], what: &str) -> Result<IdxArray> {
    let Some((&[z0, z1, kind, rank], rest)) = bytes.split_first_chunk::<4>() else {
        return Err(Error::format(what, format!("{} bytes, too short for the 4-byte IDX magic", bytes.len())));
    };
    if (z0, z1) != (0, 0) {
        return Err(Error::format(what, format!("wrong magic {z0:#04x} {z1:#04x} (an IDX file starts with 00 00)")));
    }
    if kind != 0x08 {
        return Err(Error::format(what, format!("element type {kind:#04x} is not unsigned byte (0x08)")));
    }
    let rank = rank as usize;
    if rank == 0 || rank > 4 {
        return Err(Error::format(what, format!("rank {rank} (expected 1 to 4)")));
    }
    if rest.len() < 4 * rank {
        return Err(Error::format(what, format!("truncated header: {rank} dimensions need {} bytes", 4 * rank)));
    }
    let (header, data) = rest.split_at(4 * rank);
    let dims: Vec<usize> =
        header.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let len = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::format(what, format!("dimensions {dims:?} overflow")))?;
    if data.len() != len {
        let how = if data.len() < len { "truncated" } else { "trailing bytes" };
        return Err(Error::format(what, format!("{how}: dimensions {dims:?} need {len} bytes, found {}", data.len())));
    }
    Ok(IdxArray { dims, data: data.to_vec() })
}

/// Reads and parses an IDX file (raw or gzip).
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; otherwise as [`read_idx`].
pub fn read_idx_file(path: &Path) -> Result<IdxArray> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    read_idx(&bytes, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        dims.iter().for_each(|d| v.extend(d.to_be_bytes()));
        v.extend(data);
        v
    }

    #[test]
    fn raw_and_gzip() {
        let bytes = idx(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let a = read_idx(&bytes, "t").unwrap();
        assert_eq!(a.dims, vec![2, 3]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        assert_eq!(read_idx(&gz.finish().unwrap(), "t").unwrap(), a);
    }

    #[test]
    fn rejects_bad_files() {
        let good = idx(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let e = read_idx(&good[..good.len() - 1], "t").unwrap_err().to_string();
        assert!(e.contains("truncated") && e.contains("need 6 bytes, found 5"), "{e}");
        let mut bad = good.clone();
        bad[0] = 0x42;
        assert!(read_idx(&bad, "t").unwrap_err().to_string().contains("wrong magic"));
        let mut bad = good.clone();
        bad[2] = 0x0d;
        assert!(read_idx(&bad, "t").unwrap_err().to_string().contains("element type"));
        let mut long = good.clone();
        long.push(0);
        assert!(read_idx(&long, "t").unwrap_err().to_string().contains("trailing"));
        assert!(read_idx(&[0, 0], "t").is_err());
        assert!(read_idx(&idx(&[u32::MAX, u32::MAX, u32::MAX], &[]), "t").is_err());
        assert!(read_idx(&[0x1f, 0x8b, 1, 2, 3], "t").unwrap_err().to_string().contains("gzip"));
        assert!(matches!(read_idx_file(Path::new("/nonexistent/file")), Err(Error::Io { .. })));
    }
}
