//! Aligned tables for people: each column as wide as its widest cell, and
//! statuses coloured on a terminal only (never in a pipe or a file, and not
//! when `NO_COLOR` is set, per no-color.org).

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

#[derive(Clone, Copy, PartialEq)]
pub enum Align {
    Left,
    Right,
}

/// A cell: its text, and a colour for terminals.
pub struct Cell {
    text: String,
    colour: Option<&'static str>,
}

impl Cell {
    /// A status word, coloured by what it means.
    pub fn status(text: impl std::fmt::Display) -> Cell {
        let text = text.to_string();
        let colour = match text.as_str() {
            "done" | "online" | "sent" => Some("32"),
            "failed" | "offline" | "sick" | "revoked" => Some("31"),
            "running" | "busy" => Some("36"),
            "cancelled" | "paused" | "disabled" | "pending" | "draining" => Some("33"),
            _ => None,
        };
        Cell { text, colour }
    }
}

impl<T: std::fmt::Display> From<T> for Cell {
    fn from(v: T) -> Cell {
        Cell {
            text: crate::output::clean(&v.to_string()),
            colour: None,
        }
    }
}

pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    /// Prints it on stdout; a closed pipe ends it quietly (SIGPIPE).
    pub fn print(&self) {
        let mut widths: Vec<usize> = self
            .columns
            .iter()
            .map(|(h, _)| h.chars().count())
            .collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.text.chars().count());
            }
        }
        let colour = colour_on();
        let mut out = std::io::stdout().lock();
        let header: Vec<Cell> = self.columns.iter().map(|(h, _)| Cell::from(h)).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            let last = row.len().saturating_sub(1);
            for (i, ((cell, w), (_, align))) in
                row.iter().zip(&widths).zip(&self.columns).enumerate()
            {
                let pad = w.saturating_sub(cell.text.chars().count());
                let text = match (cell.colour, colour) {
                    (Some(c), true) => format!("\x1b[{c}m{}\x1b[0m", cell.text),
                    _ => cell.text.clone(),
                };
                match align {
                    Align::Right => line.push_str(&format!("{}{text}", " ".repeat(pad))),
                    // The last column is not padded: no trailing blanks.
                    Align::Left if i == last => line.push_str(&text),
                    Align::Left => line.push_str(&format!("{text}{}", " ".repeat(pad))),
                }
                if i != last {
                    line.push_str("  ");
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
}

/// Colour only for a person at a terminal who has not said NO_COLOR.
pub fn colour_on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
    })
}

/// A duration for a table: the one formatter, [`drqueue_common::display`].
pub use drqueue_common::display::duration;

/// `812 B`, `45.2 KB`, `3.1 MB`: a file size for a table.
pub fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KB", n as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MB", n as f64 / 1_048_576.0),
        _ => format!("{:.1} GB", n as f64 / 1_073_741_824.0),
    }
}

/// `512 MB`, `1.5 GB`: memory for a table.
pub fn memory_kb(kb: u64) -> String {
    if kb >= 1024 * 1024 {
        format!("{:.1} GB", kb as f64 / (1024.0 * 1024.0))
    } else {
        format!("{} MB", kb.div_ceil(1024))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(memory_kb(2048), "2 MB");
        assert_eq!(memory_kb(1536 * 1024), "1.5 GB");
    }
}
