//! Draws a [`State`]: pure (no clock, no I/O), so the screen is snapshot-tested.
//!
//! Layout, top to bottom: header (leader, term, held for), participants, leader history beside
//! a chart of recent failover gaps, the event log, and a footer with the keys. Taller terminals
//! give the history and the log more rows; wider ones more columns.

use super::state::{Freshness, LogKind, Reach, State, fmt_duration};
use crate::election::Role;
use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Table};

mod history;
use history::{render_gaps, render_history};

const DIM: Color = Color::DarkGray;

/// Draws the whole dashboard.
pub fn render(f: &mut Frame, s: &State) {
    let area = f.area();
    let members_h = (s.members.len().max(1) as u16 + 3).clamp(5, (area.height / 3).max(5));
    let [header, members, middle, events, footer] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Length(members_h),
        Constraint::Fill(1),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    render_header(f, s, header);
    render_members(f, s, members);
    let history_w = if middle.width >= 100 {
        middle.width * 2 / 3
    } else {
        middle.width.saturating_sub(26).max(middle.width / 2)
    };
    let [history, gaps] =
        Layout::horizontal([Constraint::Length(history_w), Constraint::Fill(1)]).areas(middle);
    render_history(f, s, history);
    render_gaps(f, s, gaps);
    render_events(f, s, events);
    render_footer(f, s, footer);
    if s.help {
        render_help(f, s, area);
    }
    let confirm = match (&s.confirm_kill, &s.confirm_pod) {
        (Some(t), _) => Some((format!("kill {} (pid {})? y/n", t.id, t.pid), " SIGKILL ")),
        (None, Some(k)) if s.reach == Reach::Etcd => Some((
            format!("revoke the session of {} (term {})? y/n", k.holder, k.term),
            " etcdctl lease revoke ",
        )),
        (None, Some(k)) => Some((
            format!("delete Pod {} (term {})? y/n", k.holder, k.term),
            " kubectl delete pod ",
        )),
        (None, None) => None,
    };
    if let Some((text, title)) = confirm {
        let w = (text.len() as u16 + 6).min(area.width);
        let popup = centered(area, w, 3);
        f.render_widget(Clear, popup);
        f.render_widget(
            Paragraph::new(Line::from(text).bold())
                .alignment(Alignment::Center)
                .block(
                    Block::bordered()
                        .border_style(Style::new().fg(Color::Red))
                        .title(title),
                ),
            popup,
        );
    }
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let [r] = Layout::horizontal([Constraint::Length(w.min(area.width))])
        .flex(Flex::Center)
        .areas(area);
    let [r] = Layout::vertical([Constraint::Length(h.min(area.height))])
        .flex(Flex::Center)
        .areas(r);
    r
}

fn render_header(f: &mut Frame, s: &State, area: Rect) {
    let block = Block::bordered()
        .title(Line::from(format!(" crown · election {} ", s.election)).bold())
        .title(Line::from(format!(" {} ", s.backend)).right_aligned());
    let mut l1: Vec<Span> = vec![" ".into()];
    match &s.leader {
        Some(l) => {
            l1.push(Span::styled(
                format!("👑 {}", l.id),
                Style::new().fg(Color::Yellow).bold(),
            ));
            l1.push(format!("   term {}", l.term).bold());
            if let Some(held) = s.held_for() {
                l1.push(format!("   held for {}", fmt_duration(held)).into());
            }
            if let (Some(pid), Some(host)) = (l.pid, &l.host) {
                l1.push(Span::styled(
                    format!("   pid {pid} on {host}"),
                    Style::new().fg(DIM),
                ));
            }
        }
        None if !s.loaded => l1.push(Span::styled("reading…", Style::new().fg(DIM))),
        None => {
            l1.push(Span::styled(
                "no leader",
                Style::new().fg(Color::Red).bold(),
            ));
            if let Some(at) = s.last_released_at
                && let Some(last) = s.history.last()
            {
                l1.push(Span::styled(
                    format!(
                        "   {} released term {} at {}",
                        last.grant.holder,
                        last.grant.term,
                        s.clock(at)
                    ),
                    Style::new().fg(DIM),
                ));
            }
        }
    }
    let fresh = s
        .members
        .iter()
        .filter(|m| s.member_freshness(&m.member) == Freshness::Fresh)
        .count();
    let mut parts: Vec<Span> = vec![
        format!(" members {} ({fresh} fresh)", s.members.len()).into(),
        format!(
            "   lease {} · retry {}",
            fmt_duration(s.lease_duration),
            fmt_duration(s.retry_period)
        )
        .fg(DIM),
        format!("   {}", s.clock(s.now)).into(),
    ];
    if let Some(p) = &s.paused {
        parts.push(Span::styled(
            format!("   ⏸ paused {} (pid {})", p.id, p.pid),
            Style::new().fg(Color::Magenta).bold(),
        ));
    }
    if let Some(e) = &s.backend_error {
        parts.push(Span::styled(
            format!("   backend: {e}"),
            Style::new().fg(Color::Red),
        ));
    }
    // On narrow screens the timings give way to what is happening.
    let width: usize = parts.iter().map(|p| p.width()).sum();
    if width > area.width.saturating_sub(2) as usize && parts.len() > 3 {
        parts.remove(1);
    }
    let l2 = parts;
    f.render_widget(
        Paragraph::new(vec![Line::from(l1), Line::from(l2)]).block(block),
        area,
    );
}

fn role_style(r: Role) -> Style {
    match r {
        Role::Leader => Style::new().fg(Color::Yellow).bold(),
        Role::Follower => Style::new().fg(Color::Cyan),
        Role::Candidate => Style::new().fg(Color::Blue),
    }
}

fn fresh_style(f: Freshness) -> Style {
    match f {
        Freshness::Fresh => Style::new().fg(Color::Green),
        Freshness::Late => Style::new().fg(Color::Yellow),
        Freshness::Stale => Style::new().fg(Color::Red).bold(),
    }
}

fn render_members(f: &mut Frame, s: &State, area: Rect) {
    let wide = area.width >= 100;
    let header = Row::new(
        [
            "",
            "ID",
            "HOST",
            "PID",
            "ROLE",
            "TERM",
            "HEARTBEAT",
            "LAST CHANGE",
        ]
        .map(|h| Cell::from(h).bold()),
    );
    let rows: Vec<Row> = s
        .members
        .iter()
        .map(|v| {
            let m = &v.member;
            let holder = s
                .leader
                .as_ref()
                .is_some_and(|l| l.id == m.id && l.pid.is_none_or(|p| p == m.pid));
            let paused = s.paused.as_ref().is_some_and(|p| p.pid == m.pid);
            let dead = v.alive == Some(false);
            let (mark, mark_style) = if dead {
                ("✗", Style::new().fg(Color::Red))
            } else if paused {
                ("⏸", Style::new().fg(Color::Magenta))
            } else if holder {
                ("👑", Style::new())
            } else {
                ("", Style::new())
            };
            let fresh = s.member_freshness(m);
            let age = fmt_duration(s.heartbeat_age(m));
            let hb = if dead {
                Cell::from(format!("{age} dead")).style(Style::new().fg(Color::Red))
            } else if paused {
                Cell::from(format!("{age} ⏸")).style(fresh_style(fresh))
            } else {
                Cell::from(age).style(fresh_style(fresh))
            };
            let change = match &v.transition {
                Some(t) => {
                    let ago = fmt_duration(age_of(s, t.at));
                    if wide {
                        format!("{}→{} {ago} ago", t.from, t.to)
                    } else {
                        format!("→{} {ago} ago", t.to)
                    }
                }
                None => format!("up {}", fmt_duration(age_of(s, m.started_at))),
            };
            let row = Row::new(vec![
                Cell::from(mark).style(mark_style),
                Cell::from(m.id.clone()).bold(),
                Cell::from(m.host.clone()),
                Cell::from(m.pid.to_string()),
                Cell::from(m.role.to_string()).style(role_style(m.role)),
                Cell::from(m.term.to_string()),
                hb,
                Cell::from(change).style(Style::new().fg(DIM)),
            ]);
            if dead {
                row.style(Style::new().fg(DIM))
            } else {
                row
            }
        })
        .collect();
    let widths = [
        Constraint::Length(2),
        Constraint::Length(if wide { 14 } else { 9 }),
        Constraint::Length(if wide { 18 } else { 10 }),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(4),
        Constraint::Length(10),
        Constraint::Fill(1),
    ];
    let title = format!(" participants ({}) ", s.members.len());
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::bordered().title(title));
    if s.members.is_empty() {
        f.render_widget(
            Paragraph::new(Line::styled(
                " no heartbeats yet (start one with `crown run`)",
                Style::new().fg(DIM),
            ))
            .block(Block::bordered().title(" participants (0) ")),
            area,
        );
    } else {
        f.render_widget(table, area);
    }
}

fn age_of(s: &State, t: jiff::Timestamp) -> std::time::Duration {
    let d = s.now.duration_since(t);
    if d.is_negative() {
        std::time::Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

fn render_events(f: &mut Frame, s: &State, area: Rect) {
    let room = area.height.saturating_sub(2) as usize;
    let start = s.events.len().saturating_sub(room);
    let lines: Vec<Line> = s
        .events
        .iter()
        .skip(start)
        .map(|e| {
            let style = match e.kind {
                LogKind::Leader => Style::new().fg(Color::Yellow),
                LogKind::Info => Style::new(),
                LogKind::Warn => Style::new().fg(Color::LightRed),
                LogKind::Action => Style::new().fg(Color::Magenta).bold(),
                LogKind::Error => Style::new().fg(Color::Red).bold(),
            };
            Line::from(vec![
                Span::styled(format!(" {} ", s.clock(e.at)), Style::new().fg(DIM)),
                Span::styled(e.text.clone(), style),
            ])
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" events ")),
        area,
    );
}

fn render_footer(f: &mut Frame, s: &State, area: Rect) {
    let key = |k: &'static str, label: String, ok: bool| -> Vec<Span<'static>> {
        let (ks, ls) = if ok {
            (
                Style::new().fg(Color::Black).bg(Color::Cyan).bold(),
                Style::new(),
            )
        } else {
            (Style::new().fg(Color::Black).bg(DIM), Style::new().fg(DIM))
        };
        vec![Span::styled(k, ks), Span::styled(format!(" {label} "), ls)]
    };
    let kill = s.kill_plan().map(|_| ());
    let pause = s.pause_target().map(|_| ());
    let resign = s.resign_plan().map(|_| ());
    let kill_label = if s.reach == Reach::Kube {
        "kill pod"
    } else {
        "kill"
    };
    let spawn = s.spawn_available();
    let pause_label = if s.paused.is_some() {
        "resume"
    } else {
        "pause"
    };
    let mut spans = vec![Span::raw(" ")];
    spans.extend(key("k", kill_label.into(), kill.is_ok()));
    spans.extend(key("p", pause_label.into(), pause.is_ok()));
    spans.extend(key("r", "resign".into(), resign.is_ok()));
    spans.extend(key("n", "new".into(), spawn.is_ok()));
    spans.extend(key("?", "help".into(), true));
    spans.extend(key("q", "quit".into(), true));
    // Why the greyed keys do nothing, grouped by reason.
    let mut reasons: Vec<(String, String)> = vec![];
    for (k, r) in [
        ("k", kill.err()),
        ("p", pause.err()),
        ("r", resign.err()),
        ("n", spawn.err()),
    ] {
        if let Some(r) = r {
            match reasons.iter_mut().find(|(_, why)| *why == r) {
                Some((ks, _)) => {
                    ks.push(' ');
                    ks.push_str(k);
                }
                None => reasons.push((k.to_string(), r)),
            }
        }
    }
    for (ks, why) in reasons {
        spans.push(Span::styled(
            format!(" {ks}: {why}"),
            Style::new().fg(DIM).add_modifier(Modifier::ITALIC),
        ));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn render_help(f: &mut Frame, s: &State, area: Rect) {
    let mut lines = vec![
        Line::from(" Keys".bold()),
        Line::from(match s.reach {
            Reach::Kube => "  k      delete the leader's Pod (asks y/n; crown-labelled Pods only)",
            Reach::Etcd => "  k      kill -9 the leader here, else revoke its session (asks y/n)",
            Reach::Local => "  k      kill -9 the leader (asks y/n; leader on this host only)",
        }),
        Line::from("  p      pause the leader (SIGSTOP); p again resumes it (SIGCONT)"),
        Line::from("         past the lease duration a follower takes over in a higher"),
        Line::from("         term; on resume the old leader steps down without acting"),
        Line::from(match s.reach {
            Reach::Kube => "  r      ask the leader to resign (annotation on the Lease, its term)",
            Reach::Etcd => "  r      ask the leader to resign (SIGUSR1 here, else the resign key)",
            Reach::Local => "  r      ask the leader to resign (SIGUSR1)",
        }),
        Line::from("  n      start another participant (crown demo only)"),
        Line::from("  ?      this help            q, Esc, Ctrl-C   quit"),
        Line::from(""),
        Line::from(" History".bold()),
        Line::from("  ENDED how each grant ended; GAP the time without a leader before it"),
        Line::from(""),
        Line::from(" Heartbeat age".bold()),
        Line::from(vec![
            "  ".into(),
            Span::styled("green", fresh_style(Freshness::Fresh)),
            format!(" ≤ 2 × retry ({})  ", fmt_duration(s.retry_period * 2)).into(),
            Span::styled("yellow", fresh_style(Freshness::Late)),
            format!(" ≤ lease ({})  ", fmt_duration(s.lease_duration)).into(),
            Span::styled("red", fresh_style(Freshness::Stale)),
            " older".into(),
        ]),
    ];
    if let Some(p) = &s.log_path {
        lines.push(Line::from(""));
        lines.push(Line::from(format!(" dashboard log: {p}")).fg(DIM));
    }
    let h = lines.len() as u16 + 2;
    let popup = centered(area, 76, h);
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" help (any key closes) ")),
        popup,
    );
}

#[cfg(test)]
mod tests;
