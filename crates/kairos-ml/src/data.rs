//! The training table: dense, row-major `f32` features (NaN = missing) and a 0/1 target.

use crate::MlError;
use std::collections::HashMap;

/// A table of examples.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    /// Feature names, one per column.
    pub names: Vec<String>,
    /// Row-major features: row `i` is `x[i * cols .. (i + 1) * cols]`.
    pub x: Vec<f32>,
    /// Target per row, 0.0 or 1.0.
    pub y: Vec<f32>,
}

/// Most distinct values a text column is one-hot encoded over; rarer values are all zeros.
const MAX_CATEGORIES: usize = 32;

impl Dataset {
    /// An empty table with these columns.
    pub fn with_names(names: Vec<String>) -> Self {
        Self {
            names,
            x: Vec::new(),
            y: Vec::new(),
        }
    }

    pub fn cols(&self) -> usize {
        self.names.len()
    }

    pub fn rows(&self) -> usize {
        self.y.len()
    }

    /// Appends one example; `features` must have one value per column.
    pub fn push(&mut self, features: &[f32], label: bool) -> Result<(), MlError> {
        if features.len() != self.cols() {
            return Err(MlError::invalid(
                "features",
                format!("{} values for {} columns", features.len(), self.cols()),
            ));
        }
        self.x.extend_from_slice(features);
        self.y.push(if label { 1.0 } else { 0.0 });
        Ok(())
    }

    #[inline]
    pub fn row(&self, i: usize) -> &[f32] {
        let c = self.cols();
        &self.x[i * c..(i + 1) * c]
    }

    /// The rows at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut out = Dataset::with_names(self.names.clone());
        out.x.reserve(indices.len() * self.cols());
        out.y.reserve(indices.len());
        for &i in indices {
            out.x.extend_from_slice(self.row(i));
            out.y.push(self.y[i]);
        }
        out
    }

    /// Share of positive rows.
    pub fn positive_rate(&self) -> f64 {
        if self.y.is_empty() {
            return 0.0;
        }
        self.y.iter().map(|&v| v as f64).sum::<f64>() / self.y.len() as f64
    }

    /// Checks that the table can be trained on: rows, both classes, finite or NaN values.
    pub fn check_trainable(&self) -> Result<(), MlError> {
        if self.cols() == 0 {
            return Err(MlError::invalid("features", "no feature columns"));
        }
        if self.rows() < 2 {
            return Err(MlError::invalid("rows", "fewer than 2 examples"));
        }
        let pos = self.y.iter().filter(|&&v| v == 1.0).count();
        if pos == 0 || pos == self.rows() {
            return Err(MlError::invalid(
                "target",
                format!(
                    "only one class present ({pos} positive of {} rows)",
                    self.rows()
                ),
            ));
        }
        if let Some(i) = self.x.iter().position(|v| v.is_infinite()) {
            let c = self.cols();
            return Err(MlError::invalid(
                &self.names[i % c],
                format!("infinite value in row {}", i / c),
            ));
        }
        Ok(())
    }

    /// Reads a CSV table with a header row. `target` names the label column: `1`/`0`,
    /// `yes`/`no`, `true`/`false` (any case). Numeric columns are features as they are
    /// (empty, `NA`, `NaN`, `null` are missing); a column with other text is one-hot
    /// encoded over its most frequent values (at most 32). Columns named in `drop` are
    /// skipped (ids, leaks).
    pub fn from_csv<R: std::io::Read>(
        reader: R,
        target: &str,
        drop: &[&str],
    ) -> Result<Dataset, MlError> {
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(false)
            .from_reader(reader);
        let header: Vec<String> = rdr
            .headers()?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        let Some(t) = header.iter().position(|h| h == target) else {
            return Err(MlError::invalid(
                "target",
                format!("no column `{target}` (columns: {})", header.join(", ")),
            ));
        };
        let mut cells: Vec<Vec<String>> = vec![Vec::new(); header.len()];
        for rec in rdr.records() {
            let rec = rec?;
            for (c, v) in rec.iter().enumerate() {
                cells[c].push(v.trim().to_string());
            }
        }
        let rows = cells[t].len();
        let mut y = Vec::with_capacity(rows);
        for (r, v) in cells[t].iter().enumerate() {
            y.push(match v.to_ascii_lowercase().as_str() {
                "1" | "1.0" | "yes" | "true" | "y" => 1.0,
                "0" | "0.0" | "no" | "false" | "n" => 0.0,
                _ => {
                    return Err(MlError::invalid(
                        target,
                        format!(
                            "row {}: `{v}` is not a 0/1, yes/no or true/false label",
                            r + 1
                        ),
                    ))
                }
            });
        }
        // Columns: numeric as they are; text one-hot.
        let mut names = Vec::new();
        let mut columns: Vec<Vec<f32>> = Vec::new();
        for (c, name) in header.iter().enumerate() {
            if c == t || drop.contains(&name.as_str()) {
                continue;
            }
            let parsed: Vec<Option<f32>> = cells[c].iter().map(|v| parse_cell(v)).collect();
            let numeric = parsed.iter().all(Option::is_some);
            if numeric {
                names.push(name.clone());
                columns.push(parsed.into_iter().map(|v| v.unwrap_or(f32::NAN)).collect());
                continue;
            }
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for v in &cells[c] {
                if !is_missing(v) {
                    *counts.entry(v.as_str()).or_default() += 1;
                }
            }
            let mut values: Vec<(&str, usize)> = counts.into_iter().collect();
            values.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            values.truncate(MAX_CATEGORIES);
            for (v, _) in &values {
                names.push(format!("{name}={v}"));
                columns.push(
                    cells[c]
                        .iter()
                        .map(|x| if x == v { 1.0 } else { 0.0 })
                        .collect(),
                );
            }
        }
        let mut out = Dataset::with_names(names);
        out.x.reserve(rows * out.cols());
        for r in 0..rows {
            for col in &columns {
                out.x.push(col[r]);
            }
        }
        out.y = y;
        Ok(out)
    }
}

/// Rows with a nonlinear signal in the first four features (an interaction, a sine, a
/// square) and noise in the rest, labels drawn from it: for benchmarks and tests that need
/// data with known structure. Deterministic in `seed`.
pub fn synthetic(rows: usize, cols: usize, seed: u64) -> Dataset {
    let mut s = seed.max(1);
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut d = Dataset::with_names((0..cols).map(|j| format!("f{j}")).collect());
    let mut x = vec![0f32; cols];
    for _ in 0..rows {
        for v in x.iter_mut() {
            *v = next() as f32 * 2.0 - 1.0;
        }
        let f = |j: usize| x.get(j).copied().unwrap_or(0.0) as f64;
        let m = 2.0 * f(0) * f(1) + (3.0 * f(2)).sin() + f(3).powi(2) - 0.5;
        let label = next() < 1.0 / (1.0 + (-2.0 * m).exp());
        d.x.extend_from_slice(&x);
        d.y.push(if label { 1.0 } else { 0.0 });
    }
    d
}

fn is_missing(v: &str) -> bool {
    v.is_empty()
        || matches!(
            v.to_ascii_lowercase().as_str(),
            "na" | "nan" | "null" | "none"
        )
}

/// A numeric cell, NaN for a missing one, None for text.
fn parse_cell(v: &str) -> Option<f32> {
    if is_missing(v) {
        return Some(f32::NAN);
    }
    v.parse::<f32>().ok().filter(|x| x.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_numeric_text_missing_and_labels() {
        let csv = "id,age,plan,score,Purchase\n1,30,pro,,Yes\n2,41,free,0.5,No\n3,NA,pro,1.5,no\n";
        let d = Dataset::from_csv(csv.as_bytes(), "Purchase", &["id"]).expect("reads");
        assert_eq!(d.names, vec!["age", "plan=pro", "plan=free", "score"]);
        assert_eq!(d.y, vec![1.0, 0.0, 0.0]);
        assert_eq!(d.row(1), &[41.0, 0.0, 1.0, 0.5]);
        assert!(d.row(0)[3].is_nan());
        assert!(d.row(2)[0].is_nan());
    }

    #[test]
    fn csv_bad_label_names_row_and_value() {
        let err = Dataset::from_csv("a,t\n1,maybe\n".as_bytes(), "t", &[])
            .expect_err("bad label")
            .to_string();
        assert!(err.contains("row 1") && err.contains("maybe"), "{err}");
        let err = Dataset::from_csv("a,t\n1,1\n".as_bytes(), "target", &[])
            .expect_err("no column")
            .to_string();
        assert!(err.contains("no column `target`"), "{err}");
    }

    #[test]
    fn one_class_is_not_trainable() {
        let d = Dataset::from_csv("a,t\n1,1\n2,1\n".as_bytes(), "t", &[]).expect("reads");
        assert!(d.check_trainable().is_err());
    }
}
