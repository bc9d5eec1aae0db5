//! Small time-series charts as inline SVG, drawn on the server: they need no script and
//! no chart library, and a live update simply brings the section back with new ones.

use maud::{html, Markup};

const WIDTH: f64 = 240.0;
const HEIGHT: f64 = 48.0;

/// A human-sized number: `0`, `3.2`, `41`, `1.2k`, `3.4M`.
pub fn figure(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if magnitude >= 1e4 {
        format!("{:.1}k", value / 1e3)
    } else if magnitude >= 10.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// A line over the samples (gaps where a value is missing), with the latest value and
/// the peak as text beside it.
pub fn sparkline(title: &str, unit: &str, values: &[Option<f64>]) -> Markup {
    let peak = values.iter().flatten().fold(0.0_f64, |a, b| a.max(*b));
    let scale = if peak > 0.0 { peak } else { 1.0 };
    let step = if values.len() > 1 {
        WIDTH / (values.len() - 1) as f64
    } else {
        0.0
    };
    // Runs of present values become separate polylines.
    let mut runs: Vec<String> = Vec::new();
    let mut current = String::new();
    for (i, value) in values.iter().enumerate() {
        match value {
            Some(v) => {
                let (x, y) = (i as f64 * step, HEIGHT - 2.0 - (v / scale) * (HEIGHT - 4.0));
                current.push_str(&format!("{x:.1},{y:.1} "));
            }
            None if !current.is_empty() => runs.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        runs.push(current);
    }
    let latest = values.iter().rev().flatten().next();
    html! {
        figure.chart {
            figcaption {
                span.chart-title { (title) }
                " "
                span.chart-latest { @match latest { Some(v) => { (figure(*v)) " " (unit) }, None => "–" } }
                " "
                span.chart-peak { "peak " (figure(peak)) }
            }
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) width=(WIDTH) height=(HEIGHT) role="img" aria-label=(title) {
                line x1="0" y1=(HEIGHT - 1.0) x2=(WIDTH) y2=(HEIGHT - 1.0) class="axis" {}
                @for points in &runs {
                    polyline points=(points.trim_end()) {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_at_a_glance() {
        assert_eq!(figure(0.0), "0");
        assert_eq!(figure(3.25), "3.2");
        assert_eq!(figure(41.7), "42");
        assert_eq!(figure(12_345.0), "12.3k");
        assert_eq!(figure(3_400_000.0), "3.4M");
    }

    #[test]
    fn gaps_split_the_line_and_text_is_escaped() {
        let svg = sparkline(
            "<b>rate</b>",
            "/s",
            &[Some(1.0), None, Some(2.0), Some(4.0)],
        )
        .into_string();
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert!(svg.contains("&lt;b&gt;rate&lt;/b&gt;"), "{svg}");
        assert!(svg.contains("peak 4"), "{svg}");
        let empty = sparkline("x", "", &[]).into_string();
        assert!(!empty.contains("<polyline"), "{empty}");
    }
}
