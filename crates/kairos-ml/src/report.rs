//! The evaluation report a person reads: the model's metrics beside its baselines (the
//! rule-based score the model should beat), feature importance, cross-validation folds,
//! and the data it was measured on. Printed as text, saved as JSON, and rendered as one
//! self-contained HTML page with SVG plots (ROC, precision-recall, calibration, gains).

use crate::metrics::Evaluation;
use serde::{Deserialize, Serialize};
use std::fmt::Write;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DataSummary {
    pub source: String,
    pub split: String,
    pub train_rows: u64,
    pub test_rows: u64,
    pub train_positive_rate: f64,
    pub test_positive_rate: f64,
    pub features: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Importance {
    pub feature: String,
    /// Normalised global importance (split gain or |weight|).
    pub importance: f64,
    /// Mean |contribution| on the test rows, in log-odds.
    pub mean_abs_contribution: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FoldResult {
    pub fold: u32,
    pub train_rows: u64,
    pub test_rows: u64,
    pub auc: f64,
    pub pr_auc: f64,
    pub log_loss: f64,
    pub brier: f64,
}

impl FoldResult {
    pub fn new(fold: u32, train_rows: usize, test_rows: usize, e: &Evaluation) -> Self {
        Self {
            fold,
            train_rows: train_rows as u64,
            test_rows: test_rows as u64,
            auc: e.auc,
            pr_auc: e.pr_auc,
            log_loss: e.log_loss,
            brier: e.brier,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub model: String,
    pub version: Option<u64>,
    pub learner: String,
    pub label: String,
    pub data: DataSummary,
    /// The model first, then baselines.
    pub evaluations: Vec<Evaluation>,
    pub importance: Vec<Importance>,
    pub folds: Vec<FoldResult>,
    pub train_seconds: f64,
    pub notes: Vec<String>,
}

impl Report {
    /// A terminal summary.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "model {}{} ({}) label: {}",
            self.model,
            self.version.map(|v| format!(" v{v}")).unwrap_or_default(),
            self.learner,
            self.label
        );
        let d = &self.data;
        let _ = writeln!(
            s,
            "data: {} | split: {} | train {} rows ({:.2}% positive) | test {} rows ({:.2}% positive) | {} features | trained in {:.2}s",
            d.source,
            d.split,
            d.train_rows,
            100.0 * d.train_positive_rate,
            d.test_rows,
            100.0 * d.test_positive_rate,
            d.features,
            self.train_seconds
        );
        let _ = writeln!(
            s,
            "\n{:<28} {:>7} {:>7} {:>8} {:>7} {:>9} {:>7} {:>6} {:>6} {:>9}",
            "scorer",
            "AUC",
            "PR-AUC",
            "logloss",
            "Brier",
            "threshold",
            "prec",
            "recall",
            "F1",
            "top-10%"
        );
        for e in &self.evaluations {
            let t = &e.at_threshold;
            let _ = writeln!(
                s,
                "{:<28} {:>7.4} {:>7.4} {:>8.4} {:>7.4} {:>9.3} {:>7.3} {:>6.3} {:>6.3} {:>8.2}x",
                truncate(&e.name, 28),
                e.auc,
                e.pr_auc,
                e.log_loss,
                e.brier,
                t.threshold,
                t.precision,
                t.recall,
                t.f1,
                e.deciles.first().map_or(0.0, |d| d.lift)
            );
        }
        if let Some(m) = self.evaluations.first() {
            let _ = writeln!(s, "\ngains ({}): decile  rate    lift  cumulative", m.name);
            for dcl in &m.deciles {
                let _ = writeln!(
                    s,
                    "  {:>2}  {:>6.2}%  {:>5.2}  {:>6.1}%",
                    dcl.decile,
                    100.0 * dcl.rate,
                    dcl.lift,
                    100.0 * dcl.cumulative_gain
                );
            }
            let _ = writeln!(s, "calibration: predicted -> observed");
            for c in &m.calibration {
                let _ = writeln!(
                    s,
                    "  {:>6.2}% -> {:>6.2}%  ({} rows)",
                    100.0 * c.mean_predicted,
                    100.0 * c.observed_rate,
                    c.rows
                );
            }
        }
        if !self.folds.is_empty() {
            let aucs: Vec<f64> = self.folds.iter().map(|f| f.auc).collect();
            let (m, sd) = mean_sd(&aucs);
            let _ = writeln!(
                s,
                "cross-validation: {} folds, AUC {m:.4} +- {sd:.4}",
                aucs.len()
            );
            for f in &self.folds {
                let _ = writeln!(
                    s,
                    "  fold {}: train {} test {} AUC {:.4} PR-AUC {:.4} logloss {:.4}",
                    f.fold, f.train_rows, f.test_rows, f.auc, f.pr_auc, f.log_loss
                );
            }
        }
        let _ = writeln!(s, "top features:");
        for i in self.importance.iter().take(10) {
            let _ = writeln!(
                s,
                "  {:<32} {:>6.1}%  mean |contribution| {:.4}",
                truncate(&i.feature, 32),
                100.0 * i.importance,
                i.mean_abs_contribution
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }

    /// One self-contained HTML page.
    pub fn html(&self) -> String {
        let mut h = String::new();
        let title = format!("Kairos model report: {}", esc(&self.model));
        let _ = write!(
            h,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title><style>\
body{{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}}\
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
th{{background:#f3f3f3}}td:first-child,th:first-child{{text-align:left}}\
.plots{{display:flex;flex-wrap:wrap;gap:16px}}.plot{{border:1px solid #ddd;padding:4px}}\
.note{{color:#8a5a00}}</style></head><body><h1>{title}</h1>"
        );
        let d = &self.data;
        let _ = write!(
            h,
            "<p>Learner <b>{}</b>{}. Label: <code>{}</code>. Data: {} ({}). Train {} rows ({:.2}% positive), test {} rows ({:.2}% positive), {} features; trained in {:.2}s.</p>",
            esc(&self.learner),
            self.version.map(|v| format!(", version {v}")).unwrap_or_default(),
            esc(&self.label),
            esc(&d.source),
            esc(&d.split),
            d.train_rows,
            100.0 * d.train_positive_rate,
            d.test_rows,
            100.0 * d.test_positive_rate,
            d.features,
            self.train_seconds
        );
        for n in &self.notes {
            let _ = write!(h, "<p class=\"note\">{}</p>", esc(n));
        }
        h.push_str("<h2>Metrics on the test rows</h2><table><tr><th>scorer</th><th>AUC-ROC</th><th>PR-AUC</th><th>log loss</th><th>Brier</th><th>threshold</th><th>precision</th><th>recall</th><th>F1</th><th>top-decile lift</th></tr>");
        for e in &self.evaluations {
            let t = &e.at_threshold;
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.2}x</td></tr>",
                esc(&e.name), e.auc, e.pr_auc, e.log_loss, e.brier, t.threshold, t.precision, t.recall, t.f1,
                e.deciles.first().map_or(0.0, |d| d.lift)
            );
        }
        h.push_str("</table><div class=\"plots\">");
        let series =
            |f: &dyn Fn(&Evaluation) -> Vec<(f64, f64)>| -> Vec<(String, Vec<(f64, f64)>)> {
                self.evaluations
                    .iter()
                    .map(|e| (e.name.clone(), f(e)))
                    .collect()
            };
        h.push_str(&svg_plot(
            "ROC",
            "false positive rate",
            "true positive rate",
            &series(&|e| e.roc.clone()),
            Some(((0.0, 0.0), (1.0, 1.0))),
        ));
        h.push_str(&svg_plot(
            "Precision-recall",
            "recall",
            "precision",
            &series(&|e| e.pr.clone()),
            None,
        ));
        h.push_str(&svg_plot(
            "Calibration",
            "mean predicted",
            "observed rate",
            &series(&|e| {
                e.calibration
                    .iter()
                    .map(|c| (c.mean_predicted, c.observed_rate))
                    .collect()
            }),
            Some(((0.0, 0.0), (1.0, 1.0))),
        ));
        h.push_str(&svg_plot(
            "Cumulative gains",
            "share of people contacted (by score)",
            "share of positives reached",
            &series(&|e| {
                std::iter::once((0.0, 0.0))
                    .chain(
                        e.deciles
                            .iter()
                            .map(|d| (d.decile as f64 / 10.0, d.cumulative_gain)),
                    )
                    .collect()
            }),
            Some(((0.0, 0.0), (1.0, 1.0))),
        ));
        h.push_str("</div>");
        if let Some(m) = self.evaluations.first() {
            h.push_str("<h2>Lift and gains by decile</h2><table><tr><th>decile</th><th>rows</th><th>positives</th><th>rate</th><th>lift</th><th>cumulative gain</th><th>scores</th></tr>");
            for d in &m.deciles {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2}%</td><td>{:.2}</td><td>{:.1}%</td><td>{:.4} - {:.4}</td></tr>",
                    d.decile, d.rows, d.positives, 100.0 * d.rate, d.lift, 100.0 * d.cumulative_gain, d.min_score, d.max_score
                );
            }
            h.push_str("</table><h2>Calibration</h2><table><tr><th>bin</th><th>rows</th><th>mean predicted</th><th>observed</th></tr>");
            for (i, c) in m.calibration.iter().enumerate() {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{:.2}%</td><td>{:.2}%</td></tr>",
                    i + 1,
                    c.rows,
                    100.0 * c.mean_predicted,
                    100.0 * c.observed_rate
                );
            }
            let t = &m.at_threshold;
            let _ = write!(
                h,
                "</table><h2>Confusion at threshold {:.3}</h2><table><tr><th></th><th>predicted positive</th><th>predicted negative</th></tr><tr><td>actual positive</td><td>{}</td><td>{}</td></tr><tr><td>actual negative</td><td>{}</td><td>{}</td></tr></table>",
                t.threshold, t.true_positives, t.false_negatives, t.false_positives, t.true_negatives
            );
        }
        if !self.folds.is_empty() {
            h.push_str("<h2>Cross-validation</h2><table><tr><th>fold</th><th>train rows</th><th>test rows</th><th>AUC</th><th>PR-AUC</th><th>log loss</th><th>Brier</th></tr>");
            for f in &self.folds {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td></tr>",
                    f.fold, f.train_rows, f.test_rows, f.auc, f.pr_auc, f.log_loss, f.brier
                );
            }
            let (m, sd) = mean_sd(&self.folds.iter().map(|f| f.auc).collect::<Vec<_>>());
            let _ = write!(h, "</table><p>AUC {m:.4} ± {sd:.4}</p>");
        }
        h.push_str("<h2>Feature importance</h2><table><tr><th>feature</th><th>importance</th><th>mean |contribution| (log-odds)</th><th></th></tr>");
        let max = self
            .importance
            .iter()
            .map(|i| i.importance)
            .fold(0.0f64, f64::max)
            .max(1e-12);
        for i in self.importance.iter().take(30) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{:.1}%</td><td>{:.4}</td><td style=\"text-align:left\"><svg width=\"200\" height=\"10\"><rect width=\"{:.1}\" height=\"10\" fill=\"#4c78a8\"/></svg></td></tr>",
                esc(&i.feature),
                100.0 * i.importance,
                i.mean_abs_contribution,
                200.0 * i.importance / max
            );
        }
        h.push_str("</table></body></html>\n");
        h
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(['…']).collect()
    }
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64;
    (m, var.sqrt())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const COLORS: &[&str] = &[
    "#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2",
];

/// A 0..1 x 0..1 line plot with a legend and an optional dashed reference line.
fn svg_plot(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[(String, Vec<(f64, f64)>)],
    reference: Option<((f64, f64), (f64, f64))>,
) -> String {
    let (w, hgt, l, r, t, b) = (360.0, 320.0, 50.0, 10.0, 28.0, 42.0);
    let px = |x: f64| l + x.clamp(0.0, 1.0) * (w - l - r);
    let py = |y: f64| hgt - b - y.clamp(0.0, 1.0) * (hgt - t - b);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"plot\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{hgt}\" font-size=\"11\">\
<text x=\"{:.0}\" y=\"16\" text-anchor=\"middle\" font-weight=\"bold\" font-size=\"13\">{}</text>",
        w / 2.0,
        esc(title)
    );
    for k in 0..=5 {
        let v = k as f64 / 5.0;
        let _ = write!(
            s,
            "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/><line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{v:.1}</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.1}</text>",
            px(v), py(0.0), px(v), py(1.0), px(0.0), py(v), px(1.0), py(v),
            px(v), hgt - b + 14.0, l - 4.0, py(v) + 4.0
        );
    }
    let _ = write!(
        s,
        "<rect x=\"{l}\" y=\"{t}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"#888\"/>\
<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
<text transform=\"translate(12,{:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        w - l - r,
        hgt - t - b,
        l + (w - l - r) / 2.0,
        hgt - 8.0,
        esc(xlabel),
        t + (hgt - t - b) / 2.0,
        esc(ylabel)
    );
    if let Some(((x0, y0), (x1, y1))) = reference {
        let _ = write!(
            s,
            "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#999\" stroke-dasharray=\"4 3\"/>",
            px(x0), py(y0), px(x1), py(y1)
        );
    }
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let d: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\
<rect x=\"{:.1}\" y=\"{:.1}\" width=\"10\" height=\"3\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            d.join(" "),
            l + 8.0,
            t + 8.0 + 14.0 * i as f64,
            l + 22.0,
            t + 12.0 + 14.0 * i as f64,
            esc(&truncate(name, 40))
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_has_the_four_plots_and_escapes_names() {
        let p: Vec<f64> = (0..50).map(|i| i as f64 / 50.0).collect();
        let y: Vec<f32> = (0..50)
            .map(|i| if i % 3 == 0 { 1.0 } else { 0.0 })
            .collect();
        let r = Report {
            model: "m<1>".into(),
            learner: "gbdt".into(),
            evaluations: vec![
                Evaluation::new("model", &p, &y, 0.5),
                Evaluation::new("score <rule>", &p, &y, 0.5),
            ],
            ..Report::default()
        };
        let h = r.html();
        assert_eq!(h.matches("<svg class=\"plot\"").count(), 4);
        assert!(h.contains("m&lt;1&gt;") && h.contains("score &lt;rule&gt;"));
        assert!(!h.contains("<rule>"));
        assert!(r.text().contains("score <rule>"));
        let json = serde_json::to_string(&r).expect("json");
        let back: Report = serde_json::from_str(&json).expect("back");
        assert_eq!(back.model, r.model);
        assert_eq!(back.evaluations.len(), 2);
        assert!((back.evaluations[0].auc - r.evaluations[0].auc).abs() < 1e-12);
    }
}
