//! Tables laid out as docker's (tabwriter: minimum width 10, padding 3) and JSON output.

use serde_json::Value;

pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|s| s.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0usize; cols];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    let w = (widths[i] + 3).max(10);
                    line.push_str(&" ".repeat(w - cell.chars().count()));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// Docker's units.HumanSize: decimal units, three significant digits.
pub fn human_size(bytes: f64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    // Three significant digits, trailing zeros removed, as Go's %.3g does.
    let g = format!("{:.*}", 3usize.saturating_sub(int_digits(v)), v);
    let digits = if g.contains('.') {
        g.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        g
    };
    format!("{digits}{}", units[i])
}

fn int_digits(v: f64) -> usize {
    if v < 1.0 {
        1
    } else {
        (v.log10().floor() as usize) + 1
    }
}

/// "5 seconds ago", from a unix timestamp or RFC 3339 text.
pub fn ago(v: &Value) -> String {
    let t = match v {
        Value::Number(n) => n
            .as_i64()
            .and_then(|s| chrono::DateTime::from_timestamp(s, 0)),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc)),
        _ => None,
    };
    match t {
        Some(t) => format!(
            "{} ago",
            strata_api_types::humanize::human_duration((chrono::Utc::now() - t).num_seconds())
        ),
        None => "N/A".into(),
    }
}

/// `sha256:abcdef...` → the first 12 hex digits.
pub fn short_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.chars().take(12).collect()
}

/// "3 minutes ago" for a unix time in seconds.
pub fn ago_unix(secs: i64) -> String {
    ago(&Value::from(secs))
}

/// "3 minutes ago" for an RFC 3339 time; `N/A`-like output for none, as [`ago`].
pub fn ago_rfc3339(t: Option<&str>) -> String {
    ago(&t.map_or(Value::Null, Value::from))
}

/// Prints one JSON value per line (docker's `--format json`).
pub fn print_json_lines<T: serde::Serialize>(items: &[T]) {
    for i in items {
        println!("{}", serde_json::to_string(i).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(0.0), "0B");
        assert_eq!(human_size(1_986_000.0), "1.99MB");
        assert_eq!(human_size(6.0), "6B");
        assert_eq!(human_size(12_345.0), "12.3kB");
        assert_eq!(human_size(100_000_000.0), "100MB");
    }

    #[test]
    fn table_pads_like_tabwriter() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["x".into(), "y".into()]);
        assert_eq!(t.render(), "A         LONGER\nx         y\n");
    }
}
