//! Background tasks with an owner: a backend's watch loops hold its shared state, so they
//! would keep it (and their connections) alive for ever; the backend holds a [`Tasks`] and
//! dropping its last clone aborts them.

use std::sync::Mutex;
use tokio::task::AbortHandle;

/// Aborts the tasks it was given when dropped.
#[derive(Debug, Default)]
pub(crate) struct Tasks(Mutex<Vec<AbortHandle>>);

impl Tasks {
    /// Spawns `f` on the current runtime, owned by `self`.
    pub(crate) fn spawn<F>(&self, f: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let h = tokio::spawn(f).abort_handle();
        self.0.lock().unwrap().push(h);
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for h in self.0.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Tasks;
    use std::sync::Arc;

    #[tokio::test]
    async fn dropping_the_owner_aborts_its_tasks_and_frees_what_they_hold() {
        let state = Arc::new(());
        let tasks = Tasks::default();
        let held = state.clone();
        tasks.spawn(async move {
            let _held = held;
            std::future::pending::<()>().await
        });
        tokio::task::yield_now().await;
        assert_eq!(Arc::strong_count(&state), 2);
        drop(tasks);
        for _ in 0..100 {
            if Arc::strong_count(&state) == 1 {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the task still holds the state after its owner was dropped");
    }
}
