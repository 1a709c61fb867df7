//! Keys to [`Action`]s: pure, so every binding is a unit test.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// Which keys mean what right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The dashboard.
    Normal,
    /// "kill `<id>` (pid N)? y/n" is shown.
    ConfirmKill,
    /// The help overlay is shown.
    Help,
}

/// What a key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Quit (resuming anything paused, stopping demo participants).
    Quit,
    /// Ask to kill the leader (shows the confirmation).
    AskKill,
    /// `y` to the confirmation: SIGKILL the leader.
    ConfirmKill,
    /// Anything else to the confirmation.
    CancelKill,
    /// SIGSTOP the leader, or SIGCONT the one paused.
    TogglePause,
    /// SIGUSR1 the leader: it resigns.
    Resign,
    /// Start another participant (demo mode).
    Spawn,
    /// Show or hide the help overlay.
    ToggleHelp,
}

/// The action for `key` in `mode`. Only presses (and repeats) count.
pub fn action(key: &KeyEvent, mode: Mode) -> Action {
    if key.kind == KeyEventKind::Release {
        return Action::None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('C')) {
        return Action::Quit;
    }
    if ctrl {
        return Action::None;
    }
    match mode {
        Mode::ConfirmKill => match key.code {
            KeyCode::Char('y') | KeyCode::Char('Y') => Action::ConfirmKill,
            _ => Action::CancelKill,
        },
        Mode::Help => match key.code {
            KeyCode::Char('q') => Action::Quit,
            _ => Action::ToggleHelp,
        },
        Mode::Normal => match key.code {
            KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
            KeyCode::Char('k') => Action::AskKill,
            KeyCode::Char('p') => Action::TogglePause,
            KeyCode::Char('r') => Action::Resign,
            KeyCode::Char('n') => Action::Spawn,
            KeyCode::Char('?') | KeyCode::Char('h') | KeyCode::F(1) => Action::ToggleHelp,
            _ => Action::None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    #[test]
    fn normal_keys() {
        let n = Mode::Normal;
        assert_eq!(action(&key('k'), n), Action::AskKill);
        assert_eq!(action(&key('p'), n), Action::TogglePause);
        assert_eq!(action(&key('r'), n), Action::Resign);
        assert_eq!(action(&key('n'), n), Action::Spawn);
        assert_eq!(action(&key('?'), n), Action::ToggleHelp);
        assert_eq!(action(&key('q'), n), Action::Quit);
        assert_eq!(action(&key('x'), n), Action::None);
        assert_eq!(
            action(&KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE), n),
            Action::Quit
        );
    }

    #[test]
    fn ctrl_c_quits_everywhere_and_other_ctrl_keys_do_nothing() {
        let c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        for m in [Mode::Normal, Mode::ConfirmKill, Mode::Help] {
            assert_eq!(action(&c, m), Action::Quit);
        }
        let ck = KeyEvent::new(KeyCode::Char('k'), KeyModifiers::CONTROL);
        assert_eq!(action(&ck, Mode::Normal), Action::None);
    }

    #[test]
    fn confirmation_needs_y() {
        let m = Mode::ConfirmKill;
        assert_eq!(action(&key('y'), m), Action::ConfirmKill);
        assert_eq!(action(&key('Y'), m), Action::ConfirmKill);
        assert_eq!(action(&key('n'), m), Action::CancelKill);
        assert_eq!(action(&key('k'), m), Action::CancelKill);
        assert_eq!(
            action(&KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE), m),
            Action::CancelKill
        );
    }

    #[test]
    fn help_closes_on_any_key_and_q_still_quits() {
        assert_eq!(action(&key('?'), Mode::Help), Action::ToggleHelp);
        assert_eq!(action(&key('k'), Mode::Help), Action::ToggleHelp);
        assert_eq!(action(&key('q'), Mode::Help), Action::Quit);
    }

    #[test]
    fn releases_are_ignored() {
        let mut k = key('k');
        k.kind = KeyEventKind::Release;
        assert_eq!(action(&k, Mode::Normal), Action::None);
    }
}
