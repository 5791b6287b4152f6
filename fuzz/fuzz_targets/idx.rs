//! Arbitrary bytes into the IDX reader (raw and, with a leading flag byte, gzip-wrapped):
//! it must return `Err` exactly when a plain re-reading of the format rejects the bytes,
//! and otherwise the same dimensions and elements.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write;

/// The format in a dozen lines, independent of the crate's parser.
fn plain(b: &[u8]) -> Option<(Vec<usize>, Vec<u8>)> {
    if b.len() < 4 || b[0] != 0 || b[1] != 0 || b[2] != 8 || b[3] == 0 || b[3] > 4 {
        return None;
    }
    let rank = b[3] as usize;
    let head = b.get(4..4 + 4 * rank)?;
    let dims: Vec<usize> = head.chunks(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let len = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    let data = &b[4 + 4 * rank..];
    (data.len() == len).then(|| (dims, data.to_vec()))
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&flag, body)) = bytes.split_first() else { return };
    let input = if flag & 1 == 1 {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(body).unwrap();
        e.finish().unwrap()
    } else {
        body.to_vec()
    };
    let got = convkit::data::read_idx(&input, "fuzz");
    // Raw input that happens to start like gzip is read as gzip: no plain answer for it.
    if flag & 1 == 0 && body.starts_with(&[0x1f, 0x8b]) {
        return;
    }
    match (got, plain(body)) {
        (Ok(a), Some((dims, data))) => assert!(a.dims == dims && a.data == data, "parsed differently"),
        (Err(_), None) => {}
        (Ok(a), None) => panic!("accepted malformed IDX as {:?}", a.dims),
        (Err(e), Some((dims, _))) => panic!("rejected a valid IDX {dims:?}: {e}"),
    }
});
