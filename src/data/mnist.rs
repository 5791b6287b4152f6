//! The MNIST loader: the four standard IDX files of a directory, as normalised tensors.

use super::idx::{read_idx_file, IdxArray};
use crate::error::{Error, Result};
use crate::Tensor;
use std::path::{Path, PathBuf};

/// Mean of the MNIST training pixels (on a 0–1 scale).
pub const MNIST_MEAN: f32 = 0.1307;
/// Standard deviation of the MNIST training pixels (on a 0–1 scale).
pub const MNIST_STD: f32 = 0.3081;

/// A train/test split of handwritten digits.
#[derive(Clone, Debug)]
pub struct Mnist {
    /// `[N, 1, 28, 28]`, normalised: `(pixel/255 − MEAN) / STD`.
    pub train_images: Tensor,
    /// Class indices 0–9.
    pub train_labels: Vec<usize>,
    /// `[M, 1, 28, 28]`, normalised as the training images.
    pub test_images: Tensor,
    /// Class indices 0–9.
    pub test_labels: Vec<usize>,
}

/// `name` or `name.gz` inside `dir`.
fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Io { path: dir.join(name).display().to_string(), reason: "no such file (or .gz)".into() })
}

fn images(a: IdxArray, what: &str) -> Result<Tensor> {
    let [n, h, w] = a.dims[..] else {
        return Err(Error::format(what, format!("images must be 3-D [N, rows, cols], got {:?}", a.dims)));
    };
    let data = a.data.iter().map(|&p| (p as f32 / 255.0 - MNIST_MEAN) / MNIST_STD).collect();
    Tensor::new(data, &[n, 1, h, w])
}

fn labels(a: IdxArray, count: usize, what: &str) -> Result<Vec<usize>> {
    if a.dims != [count] {
        return Err(Error::format(what, format!("labels must be 1-D [{count}] to match the images, got {:?}", a.dims)));
    }
    if let Some(bad) = a.data.iter().find(|&&l| l > 9) {
        return Err(Error::format(what, format!("label {bad} is not a digit 0–9")));
    }
    Ok(a.data.iter().map(|&l| l as usize).collect())
}

/// Loads `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
/// `t10k-labels-idx1-ubyte` (each raw or `.gz`) from `dir`.
///
/// # Errors
/// A missing or unreadable file, any IDX error of [`read_idx`](super::read_idx), images
/// that are not 3-D, label counts that do not match the images, labels above 9.
pub fn load_mnist(dir: &Path) -> Result<Mnist> {
    let load = |name: &str| -> Result<(IdxArray, String)> {
        let path = find(dir, name)?;
        Ok((read_idx_file(&path)?, path.display().to_string()))
    };
    let (a, what) = load("train-images-idx3-ubyte")?;
    let train_images = images(a, &what)?;
    let (a, what) = load("train-labels-idx1-ubyte")?;
    let train_labels = labels(a, train_images.shape()[0], &what)?;
    let (a, what) = load("t10k-images-idx3-ubyte")?;
    let test_images = images(a, &what)?;
    let (a, what) = load("t10k-labels-idx1-ubyte")?;
    let test_labels = labels(a, test_images.shape()[0], &what)?;
    Ok(Mnist { train_images, train_labels, test_images, test_labels })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_the_shipped_digits() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
        let m = load_mnist(&dir).unwrap();
        assert_eq!(m.train_images.shape(), &[8000, 1, 28, 28]);
        assert_eq!(m.test_images.shape(), &[2000, 1, 28, 28]);
        assert_eq!((m.train_labels.len(), m.test_labels.len()), (8000, 2000));
        // Every digit occurs; pixels are normalised (background (0 − mean)/std).
        assert!((0..10).all(|d| m.train_labels.contains(&d)));
        let min = m.train_images.data().iter().cloned().fold(f32::INFINITY, f32::min);
        assert!((min - (-MNIST_MEAN / MNIST_STD)).abs() < 1e-6);
        assert!(matches!(load_mnist(Path::new("/nonexistent")), Err(Error::Io { .. })));
    }
}
