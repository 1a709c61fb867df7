use super::*;
use crate::backend::{AcquireRequest, BackendError, LeaseView, Outcome};
use crate::election::lease::Observer;
use crate::election::{Grant, Member, Term};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;

/// A backend whose every read hangs for ever, like a FIFO named `crown.lease`.
struct Stuck;

#[async_trait::async_trait]
impl crate::backend::Lock for Stuck {
    fn kind(&self) -> &'static str {
        "stuck"
    }
    async fn try_acquire_or_renew(
        &self,
        _: AcquireRequest,
        _: &mut Observer,
    ) -> Result<Outcome, BackendError> {
        std::future::pending().await
    }
    async fn release(&self, _: Term) -> Result<(), BackendError> {
        std::future::pending().await
    }
}

#[async_trait::async_trait]
impl crate::backend::Observe for Stuck {
    async fn lease(&self) -> Result<LeaseView, BackendError> {
        std::future::pending().await
    }
    async fn members(&self) -> Result<Vec<Member>, BackendError> {
        std::future::pending().await
    }
    async fn history(&self) -> Result<Vec<Grant>, BackendError> {
        std::future::pending().await
    }
}

#[async_trait::async_trait]
impl crate::backend::Heartbeat for Stuck {
    async fn publish_member(&self, _: &Member) -> Result<(), BackendError> {
        std::future::pending().await
    }
    async fn remove_member(&self, _: &str) -> Result<(), BackendError> {
        std::future::pending().await
    }
}

impl crate::backend::Duties for Stuck {}

fn opts() -> Options {
    Options {
        refresh: Duration::from_millis(50),
        headless: false,
        duration: None,
        chaos: None,
        read_timeout: Duration::from_millis(200),
    }
}

fn key(c: char) -> std::io::Result<TermEvent> {
    Ok(TermEvent::Key(KeyEvent::new(
        KeyCode::Char(c),
        KeyModifiers::NONE,
    )))
}

fn app() -> App {
    let state = State::new("crown", "stuck", "box", false, jiff::Timestamp::now());
    App::new(Arc::new(Stuck), state, None)
}

#[tokio::test]
async fn quit_works_while_every_backend_read_hangs() {
    let mut app = app();
    let mut term = Terminal::new(TestBackend::new(100, 30)).unwrap();
    let (keys, input) = futures::channel::mpsc::unbounded();
    let (_tx, mut exits) = mpsc::unbounded_channel();
    let o = opts();
    let run = app.run_loop(
        &o,
        &mut exits,
        Some(&mut term),
        Some(input),
        std::future::pending(),
    );
    let press = async {
        // Long enough for the reader to report the stuck read.
        tokio::time::sleep(Duration::from_millis(600)).await;
        keys.unbounded_send(key('q')).unwrap();
        std::future::pending::<()>().await
    };
    let why = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::select! {
            r = run => r,
            _ = press => unreachable!(),
        }
    })
    .await
    .expect("q must quit while the backend hangs")
    .unwrap();
    assert_eq!(why, "quit");
    let stuck = app
        .state
        .events
        .iter()
        .filter(|e| e.text.contains("read stuck"))
        .count();
    assert_eq!(stuck, 1, "{:?}", app.state.events);
    assert!(!app.state.loaded);
}

#[tokio::test]
async fn a_signal_stops_the_loop_while_every_backend_read_hangs() {
    let mut app = app();
    let (_tx, mut exits) = mpsc::unbounded_channel();
    let mut o = opts();
    o.headless = true;
    let stop = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        "SIGTERM"
    };
    let why = tokio::time::timeout(
        Duration::from_secs(5),
        app.run_loop::<TestBackend, futures::channel::mpsc::UnboundedReceiver<_>>(
            &o, &mut exits, None, None, stop,
        ),
    )
    .await
    .expect("a signal must stop the dashboard while the backend hangs")
    .unwrap();
    assert_eq!(why, "SIGTERM");
}
