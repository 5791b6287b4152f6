//! Single-precision matrix multiply, `C ← α·A·B + β·C`, then an optional fused epilogue
//! (bias per row or per column of C, then ReLU), in the BLIS / Goto style.
//!
//! - Every operand has arbitrary row and column strides, so a transpose is a view
//!   ([`MatRef::t`]), not a copy.
//! - `β = 0` never reads C (NaN or garbage in C does not leak into the result).
//! - Operands are packed into cache-sized, aligned panels held in per-thread buffers that are
//!   reused across calls; register-blocked micro-kernels (AVX-512F, AVX2+FMA, or portable
//!   `wide` vectors, chosen at run time by [`crate::simd`]) do the arithmetic.
//! - Large problems are split across the caller's rayon pool; small ones stay on the calling
//!   thread. The k dimension is never split and every element goes through the same
//!   instructions whatever the split, so results are **bitwise identical for any thread
//!   count**.
//!
//! ```
//! use convkit::gemm::{gemm, GemmParams, MatMut, MatRef};
//! let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2×3, row-major
//! let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]; // 3×2, row-major
//! let mut c = [0.0; 4];
//! gemm(MatRef::row_major(&a, 2, 3)?, MatRef::row_major(&b, 3, 2)?,
//!      MatMut::row_major(&mut c, 2, 2)?, &GemmParams::default())?;
//! assert_eq!(c, [4.0, 5.0, 10.0, 11.0]);
//! # Ok::<(), convkit::Error>(())
//! ```

mod blocking;
mod driver;
pub(crate) mod kernels;
mod pack;
mod small;

use crate::error::{Error, Result};
use crate::parallel::Parallelism;
use crate::simd::{self, SimdLevel};

pub use blocking::Blocking;
pub(crate) use driver::{run_problem, CPtr, Problem};
pub use kernels::blocking_for;
pub(crate) use pack::{transpose_rows, Operand, PackSource};

/// A read-only matrix view: `rows × cols` elements at `data[i·rs + j·cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

/// A mutable matrix view: `rows × cols` elements at `data[i·rs + j·cs]`, no two of which
/// share a memory cell.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

fn last_index(name: &str, rows: usize, cols: usize, rs: usize, cs: usize) -> Result<Option<usize>> {
    if rows == 0 || cols == 0 {
        return Ok(None);
    }
    (rows - 1)
        .checked_mul(rs)
        .and_then(|r| (cols - 1).checked_mul(cs).and_then(|c| r.checked_add(c)))
        .map(Some)
        .ok_or_else(|| Error::overflow(format!("{name} strided extent")))
}

fn check_extent(name: &str, len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> Result<()> {
    if let Some(last) = last_index(name, rows, cols, rs, cs)? {
        if last >= len {
            return Err(Error::Shape {
                tensor: name.to_string(),
                expected: format!(
                    "a buffer of at least {} elements for {rows}×{cols} with strides ({rs}, {cs})",
                    last + 1
                ),
                actual: vec![len],
            });
        }
    }
    Ok(())
}

impl<'a> MatRef<'a> {
    /// A view with explicit strides.
    ///
    /// # Errors
    /// A buffer too short for the strided extent, or an extent that overflows.
    pub fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Result<Self> {
        check_extent("gemm matrix", data.len(), rows, cols, rs, cs)?;
        Ok(MatRef { data, rows, cols, rs, cs })
    }

    /// A dense row-major view (`rs = cols`, `cs = 1`).
    ///
    /// # Errors
    /// As [`MatRef::new`].
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// A dense column-major view (`rs = 1`, `cs = rows`).
    ///
    /// # Errors
    /// As [`MatRef::new`].
    pub fn col_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, 1, rows)
    }

    /// The transpose, as a view (no copy).
    pub fn t(self) -> Self {
        MatRef { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Element `(i, j)`.
    ///
    /// # Panics
    /// If `(i, j)` is out of range.
    pub fn at(&self, i: usize, j: usize) -> f32 {
        assert!(i < self.rows && j < self.cols, "({i}, {j}) outside {}×{}", self.rows, self.cols);
        self.data[i * self.rs + j * self.cs]
    }
}

impl<'a> MatMut<'a> {
    /// A mutable view with explicit strides.
    ///
    /// # Errors
    /// A buffer too short for the strided extent, an overflow, or strides under which two
    /// elements would share a cell.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Result<Self> {
        check_extent("gemm C", data.len(), rows, cols, rs, cs)?;
        // An empty matrix has no elements to overlap (a row-major m×0 view has rs = 0).
        let distinct = rows == 0
            || cols == 0
            || match (rows > 1, cols > 1) {
                (false, false) => true,
                (true, false) => rs >= 1,
                (false, true) => cs >= 1,
                (true, true) => (cs >= 1 && rs >= cols * cs) || (rs >= 1 && cs >= rows * rs),
            };
        if !distinct {
            return Err(Error::param(
                "gemm C strides",
                format!("({rs}, {cs})"),
                format!("elements of a {rows}×{cols} matrix would overlap"),
            ));
        }
        Ok(MatMut { data, rows, cols, rs, cs })
    }

    /// A dense row-major view.
    ///
    /// # Errors
    /// As [`MatMut::new`].
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// A dense column-major view.
    ///
    /// # Errors
    /// As [`MatMut::new`].
    pub fn col_major(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, 1, rows)
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Element `(i, j)`.
    ///
    /// # Panics
    /// If `(i, j)` is out of range.
    pub fn at(&self, i: usize, j: usize) -> f32 {
        assert!(i < self.rows && j < self.cols, "({i}, {j}) outside {}×{}", self.rows, self.cols);
        self.data[i * self.rs + j * self.cs]
    }

    /// A read-only view of the same elements.
    pub fn as_ref(&self) -> MatRef<'_> {
        MatRef { data: self.data, rows: self.rows, cols: self.cols, rs: self.rs, cs: self.cs }
    }
}

/// A bias added to every element of a row or of a column of C.
#[derive(Clone, Copy, Debug, Default)]
pub enum Bias<'a> {
    /// No bias.
    #[default]
    None,
    /// `C[i, j] += bias[i]` (length m): one value per output channel when C is `[K, pixels]`.
    PerRow(&'a [f32]),
    /// `C[i, j] += bias[j]` (length n).
    PerCol(&'a [f32]),
}

/// What the multiply does to a tile before it leaves the registers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// Added after `α·A·B + β·C`.
    pub bias: Bias<'a>,
    /// Then `max(x, 0)` (NaN stays NaN).
    pub relu: bool,
}

/// Everything about a multiply except the operands.
#[derive(Clone, Copy, Debug)]
pub struct GemmParams<'a> {
    /// α.
    pub alpha: f32,
    /// β; `0` means C is write-only.
    pub beta: f32,
    /// Fused bias / ReLU.
    pub epilogue: Epilogue<'a>,
    /// Threading.
    pub parallelism: Parallelism,
    /// Instruction set; `None` uses [`simd::active`].
    pub simd: Option<SimdLevel>,
    /// Cache blocking `(kc, mc, nc)` in place of the kernel's tuned one, for experiments.
    /// `kc` fixes the summation order, so results depend on it (bitwise), as on `simd`.
    pub cache_blocking: Option<(usize, usize, usize)>,
}

impl Default for GemmParams<'_> {
    /// `α = 1`, `β = 0`, no epilogue, automatic threading and instruction set.
    fn default() -> Self {
        GemmParams {
            alpha: 1.0,
            beta: 0.0,
            epilogue: Epilogue::default(),
            parallelism: Parallelism::Auto,
            simd: None,
            cache_blocking: None,
        }
    }
}

impl<'a> GemmParams<'a> {
    /// Sets α.
    pub fn alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }
    /// Sets β.
    pub fn beta(mut self, beta: f32) -> Self {
        self.beta = beta;
        self
    }
    /// Sets the bias.
    pub fn bias(mut self, bias: Bias<'a>) -> Self {
        self.epilogue.bias = bias;
        self
    }
    /// Sets ReLU.
    pub fn relu(mut self, relu: bool) -> Self {
        self.epilogue.relu = relu;
        self
    }
    /// Sets the threading.
    pub fn parallelism(mut self, p: Parallelism) -> Self {
        self.parallelism = p;
        self
    }
    /// Forces an instruction set.
    pub fn simd(mut self, level: SimdLevel) -> Self {
        self.simd = Some(level);
        self
    }
    /// Overrides the cache blocking `(kc, mc, nc)`.
    pub fn cache_blocking(mut self, kc: usize, mc: usize, nc: usize) -> Self {
        self.cache_blocking = Some((kc, mc, nc));
        self
    }
}

/// `C ← epilogue(α·A·B + β·C)` with `A: m×k`, `B: k×n`, `C: m×n`.
///
/// # Errors
/// [`Error::Shape`] when the inner or outer dimensions disagree or a bias has the wrong
/// length (the message names the operand and both shapes); [`Error::Unsupported`] when the
/// requested instruction set is not available on this CPU.
pub fn gemm(a: MatRef<'_>, b: MatRef<'_>, c: MatMut<'_>, p: &GemmParams<'_>) -> Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k {
        return Err(Error::shape("gemm B", format!("[k, n] with k = {k} (A is [{m}, {k}])"), &[b.rows, b.cols]));
    }
    if c.rows != m || c.cols != n {
        return Err(Error::shape("gemm C", format!("[m, n] = [{m}, {n}]"), &[c.rows, c.cols]));
    }
    match p.epilogue.bias {
        Bias::PerRow(v) if v.len() != m => return Err(Error::shape("gemm row bias", format!("[{m}]"), &[v.len()])),
        Bias::PerCol(v) if v.len() != n => return Err(Error::shape("gemm column bias", format!("[{n}]"), &[v.len()])),
        _ => {}
    }
    let level = p.simd.unwrap_or_else(simd::active);
    level.require("gemm")?;
    if m.saturating_mul(n).saturating_mul(k) <= small::MAX_WORK && p.cache_blocking.is_none() {
        small::run(a, b, c, p);
        return Ok(());
    }
    let mut blocking = kernels::spec(level).blocking;
    if let Some((kc, mc, nc)) = p.cache_blocking {
        if kc == 0 || mc == 0 || nc == 0 {
            return Err(Error::param(
                "gemm cache blocking",
                format!("({kc}, {mc}, {nc})"),
                "every block size must be ≥ 1",
            ));
        }
        (blocking.kc, blocking.mc, blocking.nc) = (kc, mc, nc);
    }
    driver::run(Engine { blocking, ..engine(level) }, a, b, c, p);
    Ok(())
}

/// A micro-kernel with its block sizes and its instruction set, which the packers also
/// keep to (a plan or a GEMM forced to a lower level runs nothing above it).
#[derive(Clone, Copy)]
pub(crate) struct Engine {
    pub kernel: kernels::KernelFn,
    /// Kernels for a last B sliver narrower than `nr` (see `KernelSpec::edges`).
    pub edges: &'static [kernels::KernelFn],
    pub blocking: Blocking,
    pub level: SimdLevel,
    /// See `KernelSpec::direct_a_slivers`.
    pub direct_a_slivers: usize,
}

/// The engine of a level this CPU supports (checked by the caller).
pub(crate) fn engine(level: SimdLevel) -> Engine {
    let spec = kernels::spec(level);
    Engine {
        kernel: spec.func,
        edges: spec.edges,
        blocking: spec.blocking,
        level,
        direct_a_slivers: spec.direct_a_slivers,
    }
}

/// Floating-point operations of an `m×k` by `k×n` multiply: `2·m·n·k`.
pub fn flops(m: usize, n: usize, k: usize) -> f64 {
    2.0 * m as f64 * n as f64 * k as f64
}
