//! Damaged queue files, made the ways files get damaged: zeroed, cut short, overwritten in
//! the middle. Each is refused at open (never trusted, never a panic), and salvage keeps what
//! can still be read.

use std::io::{Seek as _, SeekFrom, Write as _};

use bytes::Bytes;

use super::*;
use crate::contract::{Queue as _, QueuedEvent};
use crate::embedded::EmbeddedQueue;

fn event(n: usize) -> QueuedEvent {
    QueuedEvent::new(
        format!("event-{n}"),
        "f".to_owned(),
        "invoke".to_owned(),
        // Large enough that the events span many pages.
        Bytes::from(format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(2000))),
    )
}

/// A queue file in a fresh directory holding `n` events, closed.
async fn queue_with(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temp dir");
    let queue = EmbeddedQueue::open(dir.path()).expect("opens");
    for i in 0..n {
        queue.enqueue(event(i)).await.expect("durable");
    }
    drop(queue);
    dir
}

fn queue_file(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join(QUEUE_FILE)
}

fn open_error(dir: &tempfile::TempDir) -> String {
    match EmbeddedQueue::open(dir.path()) {
        Ok(_) => panic!("a damaged queue file opened"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn an_emptied_file_is_refused_and_salvage_starts_an_empty_queue() {
    let dir = queue_with(10).await;
    std::fs::File::create(queue_file(&dir)).expect("truncate to 0 bytes");
    let message = open_error(&dir);
    assert!(
        message.contains("exists but is empty (0 bytes)"),
        "{message}"
    );
    assert!(message.contains("impulse queue salvage"), "{message}");

    let salvaged = salvage(dir.path()).expect("salvages");
    assert_eq!((salvaged.events, salvaged.quarantined), (0, 0));
    assert!(salvaged.kept_at.exists());
    let queue = EmbeddedQueue::open(dir.path()).expect("a fresh queue opens");
    assert!(queue.is_empty());
}

#[tokio::test]
async fn a_file_cut_short_is_refused() {
    let dir = queue_with(50).await;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(queue_file(&dir))
        .expect("open");
    let len = file.metadata().expect("metadata").len();
    file.set_len(len / 2).expect("truncate");
    let message = open_error(&dir);
    assert!(message.contains("is damaged"), "{message}");
}

#[tokio::test]
async fn garbage_in_the_data_pages_is_refused_and_the_rest_salvaged() {
    let dir = queue_with(200).await;
    let path = queue_file(&dir);
    // The page that holds event 100's payload, found by its bytes.
    let bytes = std::fs::read(&path).expect("read");
    let marker = b"{\"n\":100,";
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("event 100 is in the file");
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        let page = (at as u64) & !4095;
        file.seek(SeekFrom::Start(page)).expect("seek");
        file.write_all(&[0xA5; 4096]).expect("overwrite");
    }
    let message = open_error(&dir);
    assert!(message.contains("is damaged"), "{message}");

    let salvaged = salvage(dir.path()).expect("salvages");
    assert!(salvaged.kept_at.exists());
    let queue = EmbeddedQueue::open(dir.path()).expect("the salvaged queue opens");
    assert_eq!(queue.len(), salvaged.events);
    // Every event salvaged is whole: it decodes, with its payload.
    for _ in 0..salvaged.events {
        let delivery = queue.next().await.expect("next");
        assert!(delivery.event.id.starts_with("event-"));
        assert!(delivery.event.payload.len() > 2000);
        queue.complete(delivery.lease).await.expect("completes");
    }
    assert!(
        salvaged.events < 200 || salvaged.stopped_early.is_none(),
        "{salvaged}"
    );
}

#[tokio::test]
async fn a_healthy_file_is_copied_whole_and_one_in_use_is_left_alone() {
    let dir = queue_with(20).await;
    let open = EmbeddedQueue::open(dir.path()).expect("opens");
    assert!(matches!(salvage(dir.path()), Err(SalvageError::InUse(_))));
    drop(open);
    let salvaged = salvage(dir.path()).expect("salvages");
    assert_eq!(salvaged.events, 20);
    assert_eq!(salvaged.stopped_early, None);
    assert_eq!(EmbeddedQueue::open(dir.path()).expect("opens").len(), 20);

    let empty = tempfile::tempdir().expect("a temp dir");
    assert!(matches!(
        salvage(empty.path()),
        Err(SalvageError::Missing(_))
    ));
}
