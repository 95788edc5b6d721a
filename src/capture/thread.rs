//! A frame source on a thread of its own: the next frame is captured and converted (the YUYV
//! range expansion and block sums, or a whole MJPEG decode) while the pipeline works on this one.
//!
//! Every delivery of the source is passed on, in order, errors included: the thread keeps at most
//! one frame waiting for the pipeline and one more converted, then waits for the pipeline. A dongle's own buffers keep
//! queueing meanwhile, as they do when the pipeline pulls frames itself; what changes is that the
//! conversion no longer adds to the time between verdicts. Three frame buffers rotate (the one
//! the thread writes, the one waiting, the one the pipeline reads) by swapping, never copying, so
//! nothing is allocated per frame once they have their size.
//!
//! The machinery is generic ([`AheadThread`] over [`Ahead`] work): [`CaptureThread`] runs a
//! source alone; the pipeline also runs its stages before the model on such a thread
//! (`pipeline::PrepareAhead`), so that the next frame is captured and prepared meanwhile.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{CaptureError, FrameInfo, FrameSource};
use crate::frame::LumaFrame;

/// How long dropping a capture thread waits for it to finish the capture it is in (a V4L2 wait
/// ends within the source's timeout); past this the thread is left to end with the process.
const FINISH_WAIT: Duration = Duration::from_secs(5);

/// What one step of the work gave: a frame's info (its item is then filled), the end of the
/// source, or a capture error.
pub type Delivery = Result<Option<FrameInfo>, CaptureError>;

/// Work run on an [`AheadThread`], one frame at a time.
pub trait Ahead: Send + 'static {
    /// What the work makes of a frame: a buffer, filled in place, that the thread and the loop
    /// swap (no copy, no allocation once every buffer has its size).
    type Item: Default + Send + 'static;

    /// The next frame's work, written into `into` when the delivery is `Ok(Some(..))`.
    fn produce(&mut self, into: &mut Self::Item) -> Delivery;

    /// For logs and errors.
    fn describe(&self) -> String;
}

/// A source run alone on a thread: its frames, converted.
pub struct TakeFrames<S>(pub S);

impl<S: FrameSource + Send + 'static> Ahead for TakeFrames<S> {
    type Item = LumaFrame;

    fn produce(&mut self, into: &mut LumaFrame) -> Delivery {
        self.0.take_frame(into)
    }

    fn describe(&self) -> String {
        self.0.describe()
    }
}

struct Slot<T> {
    /// The item of a waiting `Ok(Some(..))` delivery; once taken, the buffer the loop gave back.
    item: T,
    delivery: Option<Delivery>,
    /// The thread has ended: the source ended or failed for good, the thread was stopped, or it
    /// panicked.
    finished: bool,
}

struct Shared<T> {
    slot: Mutex<Slot<T>>,
    /// A delivery is waiting, or the thread finished.
    delivered: Condvar,
    /// The pipeline took the delivery, or the thread is to stop.
    taken: Condvar,
    /// Set under the slot's lock, so a thread about to wait cannot miss it.
    stop: AtomicBool,
    /// CPU time the thread had used after its last piece of work, in nanoseconds.
    cpu_nanos: AtomicU64,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        // The slot is only ever assigned whole, so a lock poisoned by a panic still holds a
        // consistent slot.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// Runs a [`FrameSource`] on its own thread; itself a `FrameSource` that lends the frames the
/// thread delivers, in the order it delivers them.
pub type CaptureThread<S = Box<dyn FrameSource + Send>> = AheadThread<TakeFrames<S>>;

impl<S: FrameSource + Send + 'static> CaptureThread<S> {
    pub fn spawn(source: S) -> Result<Self> {
        Self::start(TakeFrames(source))
    }
}

/// Runs [`Ahead`] work on its own thread, one frame ahead of the loop that takes its items.
pub struct AheadThread<A: Ahead> {
    shared: Arc<Shared<A::Item>>,
    handle: Option<JoinHandle<()>>,
    /// The item lent by the last `next_item`.
    current: A::Item,
    description: String,
    /// The source has ended: later calls say so again.
    ended: bool,
}

impl<A: Ahead> AheadThread<A> {
    pub fn start(work: A) -> Result<Self> {
        let description = work.describe();
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot { item: A::Item::default(), delivery: None, finished: false }),
            delivered: Condvar::new(),
            taken: Condvar::new(),
            stop: AtomicBool::new(false),
            cpu_nanos: AtomicU64::new(0),
        });
        let handle = std::thread::Builder::new()
            .name("capture".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || work_loop(work, &shared)
            })
            .with_context(|| format!("cannot start the capture thread for {description}"))?;
        Ok(Self { shared, handle: Some(handle), current: A::Item::default(), description, ended: false })
    }

    /// The next delivery, in the order the work made them; the item is lent until the next call.
    pub fn next_item(&mut self) -> Result<Option<(&A::Item, FrameInfo)>, CaptureError> {
        if self.ended {
            return Ok(None);
        }
        let mut slot = self.shared.lock();
        let delivery = loop {
            if let Some(delivery) = slot.delivery.take() {
                break delivery;
            }
            if slot.finished {
                return Err(CaptureError::Fatal(anyhow::anyhow!(
                    "the capture thread for {} has stopped",
                    self.description
                )));
            }
            slot = self.shared.delivered.wait(slot).unwrap_or_else(PoisonError::into_inner);
        };
        if matches!(delivery, Ok(Some(_))) {
            std::mem::swap(&mut self.current, &mut slot.item);
        }
        drop(slot);
        self.shared.taken.notify_one();
        match delivery {
            Ok(Some(info)) => Ok(Some((&self.current, info))),
            Ok(None) => {
                self.ended = true;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub fn describe(&self) -> String {
        self.description.clone()
    }

    /// CPU time the thread had used when it finished its latest piece of work (waiting for the
    /// loop costs none): what the work ahead costs, whatever the loop's own thread does.
    pub fn worker_cpu_time(&self) -> Duration {
        Duration::from_nanos(self.shared.cpu_nanos.load(Ordering::Relaxed))
    }
}

/// CPU time the calling thread has used (zero where the clock cannot be read).
fn thread_cpu_time() -> Duration {
    #[cfg(unix)]
    {
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes only the timespec it is given.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } == 0 {
            return Duration::new(now.tv_sec as u64, now.tv_nsec as u32);
        }
    }
    Duration::ZERO
}

/// Marks the thread finished however it ends, a panic included: the pipeline then gets an error
/// instead of waiting for ever.
struct FinishedOnDrop<'a, T>(&'a Shared<T>);

impl<T> Drop for FinishedOnDrop<'_, T> {
    fn drop(&mut self) {
        self.0.lock().finished = true;
        self.0.delivered.notify_all();
    }
}

fn work_loop<A: Ahead>(work: A, shared: &Shared<A::Item>) {
    let _finished = FinishedOnDrop(shared);
    // Declared after the guard so that it is dropped first: the device is closed before the
    // thread counts as finished.
    let mut work = work;
    let mut spare = A::Item::default();
    while !shared.stopping() {
        let delivery = work.produce(&mut spare);
        shared.cpu_nanos.store(thread_cpu_time().as_nanos() as u64, Ordering::Relaxed);
        let last = matches!(delivery, Ok(None) | Err(CaptureError::Fatal(_)));
        let mut slot = shared.lock();
        while slot.delivery.is_some() && !shared.stopping() {
            slot = shared.taken.wait(slot).unwrap_or_else(PoisonError::into_inner);
        }
        if shared.stopping() {
            return;
        }
        if matches!(delivery, Ok(Some(_))) {
            std::mem::swap(&mut slot.item, &mut spare);
        }
        slot.delivery = Some(delivery);
        drop(slot);
        shared.delivered.notify_one();
        if last {
            return;
        }
    }
}

impl<S: FrameSource + Send + 'static> FrameSource for CaptureThread<S> {
    fn next_frame(&mut self) -> Result<Option<(&LumaFrame, FrameInfo)>, CaptureError> {
        self.next_item()
    }

    fn describe(&self) -> String {
        AheadThread::describe(self)
    }
}

impl<A: Ahead> Drop for AheadThread<A> {
    fn drop(&mut self) {
        let deadline = Instant::now() + FINISH_WAIT;
        let mut slot = self.shared.lock();
        self.shared.stop.store(true, Ordering::Release);
        self.shared.taken.notify_all();
        while !slot.finished {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            slot = self.shared.delivered.wait_timeout(slot, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        let finished = slot.finished;
        drop(slot);
        match self.handle.take() {
            Some(handle) if finished => {
                if handle.join().is_err() {
                    log::error!("the capture thread for {} panicked", self.description);
                }
            }
            _ => log::warn!(
                "the capture thread for {} is still capturing after {} s; it ends with the process",
                self.description,
                FINISH_WAIT.as_secs()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// What the scripted source delivers for each call.
    #[derive(Clone, Copy)]
    enum Step {
        /// A `width` x 8 frame whose every pixel is the sequence number.
        Frame(u32),
        Bad,
        Timeout,
        Fatal,
        Panic,
        /// Blocks for this long, then delivers a frame (a device wait).
        Slow(Duration),
    }

    struct Scripted {
        steps: Vec<Step>,
        calls: Arc<AtomicUsize>,
        dropped: Arc<AtomicBool>,
        frame: LumaFrame,
    }

    impl Scripted {
        fn new(steps: Vec<Step>) -> (Self, Arc<AtomicUsize>, Arc<AtomicBool>) {
            let (calls, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
            let source =
                Self { steps, calls: Arc::clone(&calls), dropped: Arc::clone(&dropped), frame: LumaFrame::default() };
            (source, calls, dropped)
        }
    }

    impl Drop for Scripted {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    impl FrameSource for Scripted {
        fn next_frame(&mut self) -> Result<Option<(&LumaFrame, FrameInfo)>, CaptureError> {
            let i = self.calls.fetch_add(1, Ordering::SeqCst);
            let frame = |frame: &mut LumaFrame, width: u32| {
                frame.reshape(width, 8);
                frame.pixels_mut().fill(i as u8);
            };
            match self.steps.get(i).copied() {
                None => Ok(None),
                Some(Step::Frame(width)) => {
                    frame(&mut self.frame, width);
                    Ok(Some((&self.frame, FrameInfo { sequence: i as u64 })))
                }
                Some(Step::Slow(wait)) => {
                    std::thread::sleep(wait);
                    frame(&mut self.frame, 16);
                    Ok(Some((&self.frame, FrameInfo { sequence: i as u64 })))
                }
                Some(Step::Bad) => Err(CaptureError::BadFrame(format!("bad {i}"))),
                Some(Step::Timeout) => Err(CaptureError::Timeout(Duration::from_millis(i as u64))),
                Some(Step::Fatal) => Err(CaptureError::Fatal(anyhow::anyhow!("fatal {i}"))),
                Some(Step::Panic) => panic!("scripted panic"),
            }
        }

        fn describe(&self) -> String {
            "scripted".into()
        }
    }

    /// One delivery as a comparable line.
    fn describe(result: Result<Option<(&LumaFrame, FrameInfo)>, CaptureError>) -> String {
        match result {
            Ok(Some((frame, info))) => {
                let first = frame.pixels().first().copied();
                assert!(frame.pixels().iter().all(|&p| Some(p) == first), "a frame mixes two deliveries");
                format!("frame {} {}x{} filled {first:?}", info.sequence, frame.width(), frame.height())
            }
            Ok(None) => "end".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn delivers_what_the_source_delivers_in_order_errors_included() {
        use Step::*;
        let steps = vec![Frame(16), Frame(32), Bad, Frame(16), Timeout, Timeout, Frame(48), Frame(16), Bad];
        let (direct_source, ..) = Scripted::new(steps.clone());
        let mut direct = direct_source;
        let expected: Vec<String> = (0..12).map(|_| describe(direct.next_frame())).collect();
        let (threaded_source, ..) = Scripted::new(steps);
        let mut threaded = CaptureThread::spawn(threaded_source).unwrap();
        let got: Vec<String> = (0..12).map(|_| describe(threaded.next_frame())).collect();
        assert_eq!(got, expected);
        assert_eq!(got[1], "frame 1 32x8 filled Some(1)");
        assert_eq!(got[9..], ["end", "end", "end"]);
    }

    /// Burns 5 ms of its thread's CPU per item.
    #[cfg(unix)]
    struct Busy;
    #[cfg(unix)]
    impl Ahead for Busy {
        type Item = u64;
        fn produce(&mut self, into: &mut u64) -> Delivery {
            let from = thread_cpu_time();
            while thread_cpu_time() < from + Duration::from_millis(5) {
                *into = into.wrapping_add(1);
            }
            Ok(Some(FrameInfo { sequence: 0 }))
        }
        fn describe(&self) -> String {
            "busy".into()
        }
    }

    #[test]
    #[cfg(unix)]
    fn reports_the_worker_threads_cpu_time_not_the_callers() {
        let mut ahead = AheadThread::start(Busy).unwrap();
        let caller_from = thread_cpu_time();
        for _ in 0..4 {
            ahead.next_item().unwrap().unwrap();
        }
        let worker = ahead.worker_cpu_time();
        // At least the four items taken (it may have made two more ahead).
        assert!(worker >= Duration::from_millis(20), "{worker:?}");
        // The caller only waited: its own CPU time hardly moved while the worker's grew.
        assert!(thread_cpu_time() - caller_from < Duration::from_millis(15));
    }

    #[test]
    fn works_at_most_two_frames_ahead() {
        let (source, calls, _) = Scripted::new(vec![Step::Frame(16); 50]);
        let mut threaded = CaptureThread::spawn(source).unwrap();
        for taken in 1..=5 {
            threaded.next_frame().unwrap().unwrap();
            std::thread::sleep(Duration::from_millis(30));
            // The frames taken, the one waiting for the pipeline, and the one converted after it.
            assert!(calls.load(Ordering::SeqCst) <= taken + 2, "the thread ran ahead: {calls:?} after {taken}");
        }
    }

    #[test]
    fn a_fatal_error_ends_the_thread_and_later_calls_fail_instead_of_waiting() {
        let (source, _, dropped) = Scripted::new(vec![Step::Frame(16), Step::Fatal, Step::Frame(16)]);
        let mut threaded = CaptureThread::spawn(source).unwrap();
        assert!(threaded.next_frame().unwrap().is_some());
        assert_eq!(describe(threaded.next_frame()), "capture failed: fatal 1");
        let again = describe(threaded.next_frame());
        assert!(again.contains("capture thread for scripted has stopped"), "{again}");
        assert!(dropped.load(Ordering::SeqCst), "the source (the device) is closed when the thread ends");
    }

    #[test]
    fn a_panicking_source_is_a_fatal_error_not_a_hang() {
        let (source, ..) = Scripted::new(vec![Step::Frame(16), Step::Panic]);
        let mut threaded = CaptureThread::spawn(source).unwrap();
        assert!(threaded.next_frame().unwrap().is_some());
        let err = describe(threaded.next_frame());
        assert!(err.contains("has stopped"), "{err}");
    }

    #[test]
    fn dropping_stops_the_thread_and_closes_the_source() {
        // The thread is waiting with a frame nobody takes, and then in a slow capture.
        for steps in [vec![Step::Frame(16); 10], vec![Step::Frame(16), Step::Slow(Duration::from_millis(300))]] {
            let (source, _, dropped) = Scripted::new(steps);
            let mut threaded = CaptureThread::spawn(source).unwrap();
            threaded.next_frame().unwrap().unwrap();
            drop(threaded);
            assert!(dropped.load(Ordering::SeqCst));
        }
    }
}
