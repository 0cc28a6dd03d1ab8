//! The REST API on AWS Lambda: when the Lambda runtime starts the binary
//! (`AWS_LAMBDA_RUNTIME_API` is set), [`app`](crate::app) is served through `lambda_http`, so API
//! Gateway HTTP APIs, function URLs and ALB target groups all reach the same router.
//!
//! A function runs only while it answers, so nothing steps the simulator in the background.
//! Because the simulator is a pure function of time, each request first brings the market to
//! "now": the ticks since the previous request are stepped (a warm function), or, after a longer
//! pause, the state is rebuilt from scratch the way a starting task does it (the last five
//! seconds of history, every open candle exact). A replay needs a process that lives as long as
//! the recording: it is refused at start. `/ws` answers a clear error: streaming is Fargate's job.

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;

use crate::config::Config;
use crate::feed::sim::{Sim, SimState};
use crate::feed::{Feed, now_micros};
use crate::market::Micros;
use crate::ws::protocol::ErrorCode;
use crate::{AppState, StartError, app, http};

/// The resume window a rebuilt state has, as for a starting task.
const PREFILL_SECONDS: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(
        "--replay needs a process that lives as long as the recording; Lambda runs only while it answers: serve replays from the Fargate service"
    )]
    Replay,
}

/// The market as of the last request, and what to step next.
#[derive(Debug)]
struct Clock {
    state: AppState,
    sim: Option<(Sim, SimState)>,
}

/// Answers requests with the market brought to the current instant.
#[derive(Debug, Clone)]
pub struct Market {
    config: Arc<Config>,
    clock: Arc<Mutex<Option<Clock>>>,
}

impl Market {
    pub fn new(config: Config) -> Result<Market, LambdaError> {
        if config.replay.is_some() {
            return Err(LambdaError::Replay);
        }
        // Checked now, so a bad setting fails the function's init, not every request.
        config.validate().map_err(StartError::from)?;
        Ok(Market {
            config: Arc::new(config),
            clock: Arc::default(),
        })
    }

    /// The state as of `now`: stepped forward when the last one is recent, rebuilt otherwise.
    pub fn at(&self, now: Micros) -> Result<AppState, StartError> {
        let mut guard = self.clock.lock().unwrap_or_else(|e| e.into_inner());
        let reusable = guard.as_ref().is_some_and(|c| match &c.sim {
            Some((sim, state)) => {
                let window = u64::from(sim.rate()) * PREFILL_SECONDS;
                sim.tick_at(now).saturating_sub(state.next_tick()) <= window
            }
            None => true,
        });
        if !reusable {
            *guard = None;
        }
        let clock = match guard.as_mut() {
            Some(clock) => clock,
            None => guard.insert(self.fresh(now)?),
        };
        if let Some((sim, state)) = clock.sim.as_mut() {
            advance(&clock.state, sim, state, now);
        }
        Ok(clock.state.clone())
    }

    fn fresh(&self, now: Micros) -> Result<Clock, StartError> {
        let state = AppState::new((*self.config).clone())?;
        let sim = match state.take_feed() {
            Some(Feed::Sim(sim)) => {
                let prefill =
                    (state.hub.history_limit() as u64).min(u64::from(sim.rate()) * PREFILL_SECONDS);
                let start = sim.state_before(sim.tick_at(now).saturating_sub(prefill));
                Some((sim, start))
            }
            _ => None,
        };
        state.mark_ready();
        Ok(Clock { state, sim })
    }
}

/// Publishes every tick due by `now`, as the running service would have.
fn advance(app_state: &AppState, sim: &Sim, state: &mut SimState, now: Micros) {
    let mut events = Vec::new();
    let mut batch = crate::hub::Batch::default();
    while sim.tick_ts(state.next_tick()) <= now {
        state.step(sim, &mut events);
        app_state.hub.publish_batch(&mut events, &mut batch);
    }
}

/// What `/ws` answers here.
fn no_streaming() -> Response {
    http::error_response(
        StatusCode::NOT_IMPLEMENTED,
        ErrorCode::BadRequest,
        "this is tickstream's REST tier on AWS Lambda: WebSocket streams (/ws) are served by the Fargate service; GET /api/v1/... works here",
    )
}

/// One request, answered exactly as the HTTP server would answer it at this instant.
pub async fn handle(market: &Market, request: lambda_http::Request) -> Response {
    handle_at(market, request, now_micros()).await
}

/// [`handle`] at a given instant (tests compare answers at one instant).
pub async fn handle_at(market: &Market, request: lambda_http::Request, now: Micros) -> Response {
    if request.uri().path() == "/ws" {
        return no_streaming();
    }
    let state = match market.at(now) {
        Ok(state) => state,
        Err(e) => {
            return http::error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::BadRequest,
                &e.to_string(),
            );
        }
    };
    let (parts, body) = request.into_parts();
    let request = axum::http::Request::from_parts(parts, axum::body::Body::from(body.to_vec()));
    match app(state).oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Serves invocations until the runtime stops the process.
pub async fn serve(config: Config) -> Result<(), lambda_http::Error> {
    let market = Market::new(config)?;
    lambda_http::run(tower::service_fn(move |request: lambda_http::Request| {
        let market = market.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(&market, request).await.into_response()) }
    }))
    .await
}
