//! Classification metrics.

use std::fmt;

/// Counts of (true class, predicted class) pairs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfusionMatrix {
    /// `counts[t][p]`: samples of class `t` predicted as `p`.
    pub counts: Vec<Vec<usize>>,
}

impl ConfusionMatrix {
    /// An empty matrix for `classes` classes.
    pub fn new(classes: usize) -> Self {
        ConfusionMatrix { counts: vec![vec![0; classes]; classes] }
    }

    /// Records one prediction (ignored if either class is out of range).
    pub fn add(&mut self, truth: usize, predicted: usize) {
        if let Some(c) = self.counts.get_mut(truth).and_then(|r| r.get_mut(predicted)) {
            *c += 1;
        }
    }

    /// Fraction of correct predictions.
    pub fn accuracy(&self) -> f64 {
        let total: usize = self.counts.iter().flatten().sum();
        let right: usize = (0..self.counts.len()).map(|i| self.counts[i][i]).sum();
        right as f64 / total.max(1) as f64
    }

    /// `(precision, recall, F1)` of class `c` (0 where undefined).
    pub fn class_scores(&self, c: usize) -> (f64, f64, f64) {
        let tp = self.counts[c][c] as f64;
        let predicted: usize = self.counts.iter().map(|r| r[c]).sum();
        let actual: usize = self.counts[c].iter().sum();
        let p = if predicted > 0 { tp / predicted as f64 } else { 0.0 };
        let r = if actual > 0 { tp / actual as f64 } else { 0.0 };
        let f = if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 };
        (p, r, f)
    }
}

impl fmt::Display for ConfusionMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.counts.len();
        write!(f, "true\\pred")?;
        for p in 0..k {
            write!(f, "{p:>6}")?;
        }
        writeln!(f, "   precision recall     F1")?;
        for (t, row) in self.counts.iter().enumerate() {
            write!(f, "{t:>9}")?;
            for c in row {
                write!(f, "{c:>6}")?;
            }
            let (p, r, f1) = self.class_scores(t);
            writeln!(f, "   {p:>9.4} {r:>6.4} {f1:>6.4}")?;
        }
        write!(f, "accuracy {:.4}", self.accuracy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores() {
        let mut m = ConfusionMatrix::new(2);
        for (t, p) in [(0, 0), (0, 0), (0, 1), (1, 1)] {
            m.add(t, p);
        }
        assert_eq!(m.accuracy(), 0.75);
        let (p, r, f) = m.class_scores(0);
        assert_eq!((p, r), (1.0, 2.0 / 3.0));
        assert!((f - 0.8).abs() < 1e-12);
        assert!(m.to_string().contains("accuracy 0.7500"));
    }
}
