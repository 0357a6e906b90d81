//! A small hand-rolled SVG line-plot writer (no plotting dependency).

use std::fmt::Write;

/// One line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend name (same name → same colour in every panel).
    pub name: String,
    /// (x, y) points, drawn in order.
    pub points: Vec<(f64, f64)>,
    /// Dashed line (bounds, references).
    pub dashed: bool,
}

/// One chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Lines.
    pub series: Vec<Series>,
}

const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// "Nice" tick step for a range.
fn tick_step(span: f64) -> f64 {
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.abs().max(1e-12).log10().floor());
    let m = raw / mag;
    mag * if m < 1.5 {
        1.0
    } else if m < 3.5 {
        2.0
    } else if m < 7.5 {
        5.0
    } else {
        10.0
    }
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Renders panels side by side with one shared legend below.
pub fn render(panels: &[Panel], panel_w: f64, panel_h: f64) -> String {
    let mut names: Vec<&str> = Vec::new();
    for p in panels {
        for s in &p.series {
            if !names.contains(&s.name.as_str()) {
                names.push(&s.name);
            }
        }
    }
    let color = |n: &str| PALETTE[names.iter().position(|x| *x == n).unwrap_or(0) % PALETTE.len()];
    let legend_rows = names.len().div_ceil(5).max(1);
    let w = panel_w * panels.len() as f64;
    let h = panel_h + 22.0 * legend_rows as f64 + 10.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let (ml, mr, mt, mb) = (60.0, 15.0, 30.0, 45.0);
    for (pi, p) in panels.iter().enumerate() {
        let ox = pi as f64 * panel_w;
        let pts = p
            .series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|(x, y)| x.is_finite() && y.is_finite());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        y0 = y0.min(0.0);
        if x1 - x0 < 1e-12 {
            x1 = x0 + 1.0;
        }
        if y1 - y0 < 1e-12 {
            y1 = y0 + 1.0;
        }
        let (ys, xs) = (tick_step(y1 - y0), tick_step(x1 - x0));
        y1 = (y1 / ys).ceil() * ys;
        let (pw, ph) = (panel_w - ml - mr, panel_h - mt - mb);
        let sx = |x: f64| ox + ml + (x - x0) / (x1 - x0) * pw;
        let sy = |y: f64| mt + ph - (y - y0) / (y1 - y0) * ph;
        let _ = writeln!(
            o,
            r#"<text x="{}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
            ox + ml + pw / 2.0,
            esc(&p.title)
        );
        let mut t = (y0 / ys).ceil() * ys;
        while t <= y1 + ys * 1e-9 {
            let y = sy(t);
            let _ = writeln!(
                o,
                r##"<line x1="{}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                sx(x0),
                sx(x1),
                sx(x0) - 5.0,
                y + 4.0,
                fmt_tick(t)
            );
            t += ys;
        }
        let mut t = (x0 / xs).ceil() * xs;
        while t <= x1 + xs * 1e-9 {
            let x = sx(t);
            let _ = writeln!(
                o,
                r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
                sy(y0),
                sy(y1),
                sy(y0) + 16.0,
                fmt_tick(t)
            );
            t += xs;
        }
        let _ = writeln!(
            o,
            r##"<rect x="{}" y="{}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##,
            sx(x0),
            sy(y1)
        );
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            ox + ml + pw / 2.0,
            panel_h - 8.0,
            esc(&p.x_label)
        );
        let _ = writeln!(
            o,
            r#"<text transform="translate({},{}) rotate(-90)" text-anchor="middle">{}</text>"#,
            ox + 15.0,
            mt + ph / 2.0,
            esc(&p.y_label)
        );
        for s in &p.series {
            let d: Vec<String> = s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            if d.is_empty() {
                continue;
            }
            let dash = if s.dashed {
                r#" stroke-dasharray="6,4""#
            } else {
                ""
            };
            let c = color(&s.name);
            let _ = writeln!(
                o,
                r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"{dash}/>"#,
                d.join(" ")
            );
            for pt in &d {
                let (x, y) = pt.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(o, r#"<circle cx="{x}" cy="{y}" r="2.5" fill="{c}"/>"#);
            }
        }
    }
    for (i, n) in names.iter().enumerate() {
        let (col, row) = (i % 5, i / 5);
        let x = 20.0 + col as f64 * (w - 40.0) / 5.0;
        let y = panel_h + 12.0 + row as f64 * 22.0;
        let dashed = panels
            .iter()
            .flat_map(|p| &p.series)
            .any(|s| s.name == *n && s.dashed);
        let dash = if dashed {
            r#" stroke-dasharray="6,4""#
        } else {
            ""
        };
        let _ = writeln!(
            o,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="3"{dash}/><text x="{}" y="{}">{}</text>"#,
            x + 24.0,
            color(n),
            x + 30.0,
            y + 4.0,
            esc(n)
        );
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_well_formed_lines_and_legend() {
        let p = Panel {
            title: "hit <rate>".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![
                Series {
                    name: "lru".into(),
                    points: vec![(5.0, 30.0), (60.0, 90.0)],
                    dashed: false,
                },
                Series {
                    name: "belady".into(),
                    points: vec![(5.0, 40.0), (60.0, 95.0)],
                    dashed: true,
                },
            ],
        };
        let s = render(&[p.clone(), p], 400.0, 300.0);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 4);
        assert!(s.contains("hit &lt;rate&gt;"));
        assert!(s.contains(">belady</text>"));
    }
}
