//! One budget for the request bytes all gRPC calls hold in memory: between
//! the HTTP/2 connection and the handlers, a layer that charges every DATA
//! frame of a request body before tonic may buffer it.
//!
//! tonic buffers each request message whole before decoding it (up to the
//! message size limit), and nothing bounds how many calls do so at once:
//! many clients each announcing a large message and trickling it would
//! hold gigabytes. Here a body takes permits from one semaphore for each
//! frame it passes on, and gives them back as the handler decodes whole
//! messages ([`Charge::release`]) or when the call ends. A body that finds
//! the budget spent stops reading, so HTTP/2 flow control holds its client
//! back; one that waits longer than the budget wait is failed with
//! RESOURCE_EXHAUSTED (so calls cannot all wait on each other forever),
//! and one silent in the middle of a message for the idle timeout is
//! failed too (slowloris), while a stream idle between messages holds no
//! bytes and stays open.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};
use tonic::{body::Body, Status};

use crate::metrics::IngestStats;

/// Settings of the budget.
#[derive(Debug, Clone)]
pub struct BudgetConfig {
    /// Request bytes all calls may hold at once.
    pub max_bytes: usize,
    /// Longest a body waits for budget before its call fails.
    pub wait: Duration,
    /// Longest a call may be silent in the middle of a message.
    pub idle: Duration,
}

/// The budget shared by every call.
#[derive(Debug)]
pub struct Budget {
    permits: Arc<Semaphore>,
    config: BudgetConfig,
    stats: Arc<IngestStats>,
}

impl Budget {
    pub fn new(config: BudgetConfig, stats: Arc<IngestStats>) -> Arc<Self> {
        Arc::new(Budget {
            permits: Arc::new(Semaphore::new(config.max_bytes)),
            config,
            stats,
        })
    }

    /// Bytes charged to calls now.
    pub fn in_use(&self) -> usize {
        self.config.max_bytes - self.permits.available_permits()
    }
}

/// What one call holds of the budget. The layer puts it in the request's
/// extensions; handlers give back each message's bytes once decoded.
#[derive(Debug)]
pub struct Charge {
    held: Mutex<Option<OwnedSemaphorePermit>>,
    budget: Arc<Budget>,
}

impl Charge {
    fn add(&self, permit: OwnedSemaphorePermit) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        match held.as_mut() {
            Some(h) => h.merge(permit),
            None => *held = Some(permit),
        }
        self.update_gauge();
    }

    /// Gives back `bytes` (a decoded message and its 5-byte gRPC header),
    /// or all this call holds if that is less.
    pub fn release(&self, bytes: usize) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = held.as_mut() {
            if h.num_permits() <= bytes {
                *held = None;
            } else {
                drop(h.split(bytes));
            }
        }
        drop(held);
        self.update_gauge();
    }

    fn held(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }

    fn update_gauge(&self) {
        self.budget
            .stats
            .grpc_inflight_bytes
            .set(self.budget.in_use() as u64);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.held
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.update_gauge();
    }
}

/// The tower layer that puts every request body under the budget.
#[derive(Debug, Clone)]
pub struct BudgetLayer(pub Arc<Budget>);

impl<S> tower_layer::Layer<S> for BudgetLayer {
    type Service = BudgetService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BudgetService {
            inner,
            budget: self.0.clone(),
        }
    }
}

/// [`BudgetLayer`]'s service: wraps the body, stores the [`Charge`].
#[derive(Debug, Clone)]
pub struct BudgetService<S> {
    inner: S,
    budget: Arc<Budget>,
}

impl<S> tower_service::Service<http::Request<Body>> for BudgetService<S>
where
    S: tower_service::Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let charge = Arc::new(Charge {
            held: Mutex::new(None),
            budget: self.budget.clone(),
        });
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(charge.clone());
        let idle = self.budget.config.idle;
        let body = Body::new(BudgetBody {
            inner: body,
            charge,
            held_frame: None,
            waiting: None,
            idle: Box::pin(tokio::time::sleep(idle)),
        });
        self.inner.call(http::Request::from_parts(parts, body))
    }
}

type Acquire = Pin<Box<dyn Future<Output = Option<OwnedSemaphorePermit>> + Send>>;

/// A request body under the budget.
struct BudgetBody {
    inner: Body,
    charge: Arc<Charge>,
    /// A frame received while the budget was spent, passed on once charged.
    held_frame: Option<Frame<Bytes>>,
    /// Waiting for budget for `held_frame`, until the budget wait passes.
    waiting: Option<Acquire>,
    /// Fires when the call has been silent for the idle timeout.
    idle: Pin<Box<Sleep>>,
}

impl http_body::Body for BudgetBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let budget = &this.charge.budget;
        if let Some(waiting) = this.waiting.as_mut() {
            return match waiting.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(permit)) => {
                    this.charge.add(permit);
                    this.waiting = None;
                    Poll::Ready(this.held_frame.take().map(Ok))
                }
                Poll::Ready(None) => {
                    // The wait is over and must not be polled again.
                    this.waiting = None;
                    this.held_frame = None;
                    // With RetryInfo: OTLP clients retry RESOURCE_EXHAUSTED
                    // only then (without, they take the request for too
                    // large). The memory frees as calls end, in about a
                    // second.
                    Poll::Ready(Some(Err(crate::rpc_status::retry_after(
                        tonic::Code::ResourceExhausted,
                        format!(
                            "the server's memory for requests in flight ({} bytes) stayed in use for {} s; retry later",
                            budget.config.max_bytes,
                            budget.config.wait.as_secs()
                        ),
                        Duration::from_secs(1),
                    ))))
                }
            };
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.idle
                    .as_mut()
                    .reset(tokio::time::Instant::now() + budget.config.idle);
                // A frame larger than the whole budget (the budget is far
                // above HTTP/2's frame size, so never in practice) is
                // charged what there is.
                let len = frame
                    .data_ref()
                    .map_or(0, Bytes::len)
                    .min(budget.config.max_bytes);
                if len == 0 {
                    return Poll::Ready(Some(Ok(frame)));
                }
                let n = u32::try_from(len).unwrap_or(u32::MAX);
                match budget.permits.clone().try_acquire_many_owned(n) {
                    Ok(permit) => {
                        this.charge.add(permit);
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Err(_) => {
                        this.held_frame = Some(frame);
                        let (permits, wait) = (budget.permits.clone(), budget.config.wait);
                        this.waiting = Some(Box::pin(async move {
                            tokio::time::timeout(wait, permits.acquire_many_owned(n))
                                .await
                                .ok()
                                .and_then(Result::ok)
                        }));
                        // Poll the wait once so it registers for a wakeup.
                        Pin::new(this).poll_frame(cx)
                    }
                }
            }
            Poll::Pending => {
                // Silent in the middle of a message (it holds bytes not yet
                // decoded): end the call after the idle timeout. Between
                // messages a stream may stay quiet as long as it likes.
                if this.charge.held() > 0 && this.idle.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                        "no data for {} s in the middle of a message",
                        budget.config.idle.as_secs()
                    )))));
                }
                Poll::Pending
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held_frame.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
