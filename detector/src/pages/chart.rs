//! Per-minute line charts rendered on the server as inline SVG: no script, no CDN, and the
//! numbers behind each chart in a table a keyboard or screen-reader user can open.
//!
//! A [`Chart`] holds one value per minute for each [`Line`]; `None` is a minute without
//! data (no host of the group reported), drawn as a gap, never as zero.

use maud::{Markup, html};

use super::format::{clock, number};

/// Width and height of the SVG's coordinate system; the SVG scales to its container.
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 170.0;
/// Room for the y-axis labels, the x-axis labels and the batch labels.
const LEFT: f64 = 46.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 22.0;

/// Which group a line shows; it picks the colour and dash (the CSS classes
/// `line-released` and `line-reference`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Hosts of the release.
    Released,
    /// Hosts that keep the old version.
    Reference,
}

impl Group {
    fn class(self) -> &'static str {
        match self {
            Group::Released => "line-released",
            Group::Reference => "line-reference",
        }
    }
}

/// One series of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Shown in the legend and the data table.
    pub label: String,
    /// Colour and dash.
    pub group: Group,
    /// One value per minute from [`Chart::start`]; `None` where nothing was reported.
    pub values: Vec<Option<f64>>,
}

/// A vertical mark at a minute (a batch of the release).
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// The moment marked (Unix seconds; drawn at its minute).
    pub at: i64,
    /// A short label drawn at the top (`B1`).
    pub short: String,
    /// The full label (tooltip and data table).
    pub label: String,
}

/// A per-minute line chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Anchor id of the chart's figure.
    pub id: String,
    /// Caption.
    pub title: String,
    /// What the values count, for the y axis and the table.
    pub unit: String,
    /// The first minute (Unix seconds, a multiple of 60).
    pub start: i64,
    /// The series, all of the same length.
    pub lines: Vec<Line>,
    /// Batches.
    pub markers: Vec<Marker>,
}

impl Chart {
    /// Minutes on the x axis.
    fn minutes(&self) -> usize {
        self.lines.iter().map(|l| l.values.len()).max().unwrap_or(0)
    }

    /// Values that are not missing, over all lines.
    pub fn points(&self) -> usize {
        self.lines
            .iter()
            .map(|l| l.values.iter().flatten().count())
            .sum()
    }

    /// The largest value, 0 without data.
    pub fn max(&self) -> f64 {
        self.lines
            .iter()
            .flat_map(|l| l.values.iter().flatten())
            .fold(0.0_f64, |m, v| if v.is_finite() { m.max(*v) } else { m })
    }

    /// The figure: SVG, legend, and the data in a collapsed table.
    pub fn render(&self) -> Markup {
        let n = self.minutes();
        let points = self.points();
        let top = nice_ceiling(self.max());
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let x = |i: usize| {
            if n <= 1 {
                LEFT + plot_w / 2.0
            } else {
                LEFT + plot_w * i as f64 / (n - 1) as f64
            }
        };
        let y = |v: f64| TOP + plot_h * (1.0 - (v / top).clamp(0.0, 1.0));
        let end = self.start + 60 * (n.max(1) as i64 - 1);
        let summary = format!(
            "{}: {} from {} to {} UTC; {}",
            self.title,
            self.unit,
            clock(self.start),
            clock(end),
            self.lines
                .iter()
                .map(|l| format!("{} at most {}", l.label, number(line_max(l))))
                .collect::<Vec<_>>()
                .join(", ")
        );
        html! {
            figure.chart id=(self.id) data-points=(points) data-max=(number(self.max())) {
                figcaption { (self.title) span.unit { " — " (self.unit) } }
                @if points == 0 {
                    p.empty { "No data reported in this window." }
                } @else {
                    svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(summary) xmlns="http://www.w3.org/2000/svg" {
                        // Grid and y labels at 0, half and the top.
                        @for frac in [0.0, 0.5, 1.0] {
                            line.grid x1=(f1(LEFT)) x2=(f1(WIDTH - RIGHT)) y1=(f1(y(top * frac))) y2=(f1(y(top * frac))) {}
                            text.ylabel x=(f1(LEFT - 4.0)) y=(f1(y(top * frac) + 4.0)) text-anchor="end" { (number(top * frac)) }
                        }
                        text.xlabel x=(f1(LEFT)) y=(f1(HEIGHT - 6.0)) text-anchor="start" { (clock(self.start)) }
                        @if n > 1 {
                            text.xlabel x=(f1(WIDTH - RIGHT)) y=(f1(HEIGHT - 6.0)) text-anchor="end" { (clock(end)) " UTC" }
                        }
                        @for m in &self.markers {
                            @let i = marker_index(self.start, m.at, n);
                            @if let Some(i) = i {
                                g.marker {
                                    title { (m.label) }
                                    line x1=(f1(x(i))) x2=(f1(x(i))) y1=(f1(TOP - 2.0)) y2=(f1(TOP + plot_h)) {}
                                    text x=(f1(x(i) + 3.0)) y=(f1(TOP - 4.0)) { (m.short) }
                                }
                            }
                        }
                        @for line in &self.lines {
                            g class=(line.group.class()) {
                                title { (line.label) }
                                @for run in runs(&line.values) {
                                    @if run.len() == 1 {
                                        circle cx=(f1(x(run[0].0))) cy=(f1(y(run[0].1))) r="2.5" {}
                                    } @else {
                                        polyline points=(run.iter().map(|(i, v)| format!("{},{}", f1(x(*i)), f1(y(*v)))).collect::<Vec<_>>().join(" ")) {}
                                    }
                                }
                            }
                        }
                    }
                    ul.legend {
                        @for line in &self.lines {
                            li { span class=(format!("swatch {}", line.group.class())) aria-hidden="true" {} (line.label) }
                        }
                        @if !self.markers.is_empty() {
                            li { span.swatch.swatch-marker aria-hidden="true" {} "batch" }
                        }
                    }
                    details.data {
                        summary { "Data (" (self.unit) ")" }
                        (self.table())
                    }
                }
            }
        }
    }

    /// The minutes with data, one row each, with the batches in their minute.
    fn table(&self) -> Markup {
        let n = self.minutes();
        html! {
            table {
                thead { tr { th scope="col" { "minute (UTC)" } @for l in &self.lines { th scope="col" { (l.label) } } th scope="col" { "batch" } } }
                tbody {
                    @for i in 0..n {
                        @let minute = self.start + 60 * i as i64;
                        @let batches: Vec<&str> = self.markers.iter().filter(|m| marker_index(self.start, m.at, n) == Some(i)).map(|m| m.label.as_str()).collect();
                        @if !batches.is_empty() || self.lines.iter().any(|l| l.values.get(i).copied().flatten().is_some()) {
                            tr {
                                td { (clock(minute)) }
                                @for l in &self.lines {
                                    td { @match l.values.get(i).copied().flatten() { Some(v) => (number(v)), None => "–" } }
                                }
                                td { (batches.join(", ")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn line_max(line: &Line) -> f64 {
    line.values
        .iter()
        .flatten()
        .fold(0.0_f64, |m, v| if v.is_finite() { m.max(*v) } else { m })
}

/// The index of the minute of `at`, when it falls in the chart.
fn marker_index(start: i64, at: i64, n: usize) -> Option<usize> {
    let i = usize::try_from((at - start).div_euclid(60)).ok()?;
    (i < n).then_some(i)
}

/// Consecutive minutes with finite values: the pieces of a line between gaps.
fn runs(values: &[Option<f64>]) -> Vec<Vec<(usize, f64)>> {
    let mut runs = Vec::new();
    let mut current = Vec::new();
    for (i, v) in values.iter().enumerate() {
        match v {
            Some(v) if v.is_finite() => current.push((i, *v)),
            _ => {
                if !current.is_empty() {
                    runs.push(std::mem::take(&mut current));
                }
            }
        }
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

/// The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `max` (1 for 0).
fn nice_ceiling(max: f64) -> f64 {
    if !(max.is_finite() && max > 0.0) {
        return 1.0;
    }
    let power = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|c| *c >= max * (1.0 - 1e-9))
        .unwrap_or(10.0 * power)
}

/// A coordinate with one decimal: small SVG, no visible rounding.
fn f1(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(values: Vec<Option<f64>>) -> Chart {
        Chart {
            id: "c".into(),
            title: "NoSuchMethodError".into(),
            unit: "per host per minute".into(),
            start: 1_763_880_000,
            lines: vec![Line {
                label: "released".into(),
                group: Group::Released,
                values,
            }],
            markers: vec![Marker {
                at: 1_763_880_130,
                short: "B1".into(),
                label: "batch 1: a, b".into(),
            }],
        }
    }

    #[test]
    fn gaps_split_lines_and_lone_points_are_dots() {
        let svg = chart(vec![Some(1.0), Some(2.0), None, Some(4.0), None])
            .render()
            .into_string();
        assert_eq!(svg.matches("<polyline").count(), 1, "{svg}");
        assert_eq!(svg.matches("<circle").count(), 1, "{svg}");
        assert!(svg.contains(r#"data-points="3""#), "{svg}");
        assert!(svg.contains(r#"data-max="4""#), "{svg}");
    }

    #[test]
    fn a_chart_without_data_says_so() {
        let html = chart(vec![None, None]).render().into_string();
        assert!(html.contains("No data reported"), "{html}");
        assert!(!html.contains("<svg"), "{html}");
    }

    #[test]
    fn markers_land_on_their_minute_and_outside_ones_are_left_out() {
        let c = chart(vec![Some(0.0); 5]);
        assert_eq!(marker_index(c.start, 1_763_880_130, 5), Some(2));
        assert_eq!(marker_index(c.start, 1_763_879_999, 5), None);
        assert_eq!(marker_index(c.start, 1_763_880_300, 5), None);
        let svg = c.render().into_string();
        assert!(svg.contains("batch 1: a, b"), "{svg}");
    }

    #[test]
    fn labels_from_logs_are_escaped() {
        let mut c = chart(vec![Some(1.0)]);
        c.title = "<script>alert(1)</script>".into();
        let html = c.render().into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(0.3), 0.5);
        assert_eq!(nice_ceiling(1.0), 1.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(21.0), 25.0);
        assert_eq!(nice_ceiling(99.0), 100.0);
        assert_eq!(nice_ceiling(f64::NAN), 1.0);
    }
}
