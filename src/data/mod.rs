//! Data sets: the IDX file format of MNIST, and the MNIST loader.

mod idx;
mod mnist;

pub use idx::{read_idx, read_idx_file, IdxArray};
pub use mnist::{load_mnist, Mnist, MNIST_MEAN, MNIST_STD};
