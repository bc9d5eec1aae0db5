//! The two text formats scrapers speak, chosen by the request's `Accept` header:
//! OpenMetrics 1.0 (what prometheus-client encodes) when asked for, else the Prometheus
//! text format 0.0.4, which older scrapers and most parsers expect.
//!
//! The 0.0.4 text is derived from the OpenMetrics text of the same registry. For what this
//! host exports (counters, gauges, histograms) the formats differ only in framing: a
//! counter's `# HELP` / `# TYPE` name carries the `_total` suffix in 0.0.4, there is no
//! `# UNIT` and no `# EOF`, and `_created` samples do not exist.

/// A scrape's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Prometheus,
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header names `application/openmetrics-text` with a
    /// weight above zero; the Prometheus text format otherwise.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let wants_openmetrics = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next().unwrap_or_default();
                let refused = parts.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if wants_openmetrics {
            Self::OpenMetrics
        } else {
            Self::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The Prometheus 0.0.4 text of an OpenMetrics exposition.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let described = ["# HELP ", "# TYPE "]
            .iter()
            .find_map(|prefix| line.strip_prefix(prefix).map(|rest| (*prefix, rest)));
        if let Some((prefix, rest)) = described {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(&format!("{prefix}{name}_total {tail}\n"));
                continue;
            }
        } else if let Some(name) = sample_name(line) {
            let created = name
                .strip_suffix("_created")
                .is_some_and(|base| counters.contains(base));
            if created {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn sample_name(line: &str) -> Option<&str> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    line.split(['{', ' ']).next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_accept_header() {
        use Format::*;
        assert_eq!(Format::negotiate(None), Prometheus);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Prometheus
        );
        let prometheus_server = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus_server)), OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0")),
            Prometheus
        );
    }

    #[test]
    fn counters_take_their_total_name_and_framing_goes() {
        let om = "# HELP x_handled Events.\n# TYPE x_handled counter\nx_handled_total{plugin=\"a\"} 0\nx_handled_created{plugin=\"a\"} 1.7e9\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n# EOF\n";
        assert_eq!(
            prometheus_text(om),
            "# HELP x_handled_total Events.\n# TYPE x_handled_total counter\nx_handled_total{plugin=\"a\"} 0\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n"
        );
    }
}
