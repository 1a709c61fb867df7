//! The leader-history table and the failover-gaps chart, drawn side by side under the
//! participants.

use super::DIM;
use crate::tui::state::State;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Bar, BarChart, Block, Cell, Paragraph, Row, Table};

pub(super) fn render_history(f: &mut Frame, s: &State, area: Rect) {
    let room = area.height.saturating_sub(3) as usize;
    let start = s.history.len().saturating_sub(room);
    let header =
        Row::new(["TERM", "HOLDER", "FROM", "TO", "ENDED", "GAP"].map(|h| Cell::from(h).bold()));
    let current_term = s.leader.as_ref().map(|l| l.term);
    let rows: Vec<Row> = s.history[start..]
        .iter()
        .enumerate()
        .map(|(j, r)| {
            let i = start + j;
            let g = &r.grant;
            let current = r.ended.is_none() && current_term == Some(g.term);
            let to = match s.grant_end(i) {
                Some(t) => s.clock(t),
                None if current => "now".into(),
                None => "-".into(),
            };
            let ended = match r.ended {
                Some(e) => Cell::from(e.to_string()).style(match e {
                    crate::election::EndKind::Released => Style::new().fg(Color::Green),
                    crate::election::EndKind::Expired => Style::new().fg(Color::Yellow),
                    _ => Style::new().fg(Color::Red),
                }),
                None if current => Cell::from("leading").style(Style::new().fg(Color::Yellow)),
                None => Cell::from("-"),
            };
            let gap = match g.gap_ms {
                Some(ms) => format!("{ms} ms"),
                None => "-".into(),
            };
            Row::new(vec![
                Cell::from(g.term.to_string()),
                Cell::from(g.holder.clone()).bold(),
                Cell::from(s.clock(g.acquired_at)),
                Cell::from(to),
                ended,
                Cell::from(gap),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(4),
        Constraint::Length(if area.width >= 70 { 14 } else { 8 }),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(11),
        Constraint::Fill(1),
    ];
    let title = format!(" leader history ({}) ", plural(s.history.len(), "grant"));
    f.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(title)),
        area,
    );
}

/// `1 grant`, `3 grants`.
fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

pub(super) fn render_gaps(f: &mut Frame, s: &State, area: Rect) {
    let block = Block::bordered().title(" failover gaps ");
    let room = area.height.saturating_sub(2) as usize;
    let gaps = s.recent_gaps(room.max(1));
    if gaps.is_empty() {
        f.render_widget(
            Paragraph::new(Line::styled(" no failover yet", Style::new().fg(DIM))).block(block),
            area,
        );
        return;
    }
    let bars: Vec<Bar> = gaps
        .iter()
        .map(|(t, ms)| {
            let style = if u128::from(*ms) <= s.retry_period.as_millis() {
                Style::new().fg(Color::Green)
            } else if u128::from(*ms) <= s.lease_duration.as_millis() * 2 {
                Style::new().fg(Color::Yellow)
            } else {
                Style::new().fg(Color::Red)
            };
            Bar::default()
                .value(*ms)
                .label(Line::from(format!("t{t}")))
                .text_value(format!("{ms} ms"))
                .style(style)
                .value_style(style.add_modifier(Modifier::REVERSED))
        })
        .collect();
    // Bars against the lease duration (or the longest gap, if longer): a gap of 0 ms draws
    // nothing, and a few milliseconds are not drawn as long as an expiry.
    let lease_ms = u64::try_from(s.lease_duration.as_millis()).unwrap_or(u64::MAX);
    let scale = gaps
        .iter()
        .map(|(_, ms)| *ms)
        .fold(lease_ms, u64::max)
        .max(1);
    f.render_widget(
        BarChart::horizontal(bars)
            .bar_width(1)
            .bar_gap(0)
            .max(scale)
            .block(block),
        area,
    );
}
