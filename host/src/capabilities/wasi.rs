//! WASI, linked because language runtimes import it (every `wasm32-wasip2` std guest;
//! componentize-py; componentize-js, which also imports `wasi:http`), with nothing granted:
//!
//! * no preopened directories, so no files; no environment variables, no arguments;
//! * no sockets: TCP, UDP and name lookup are refused;
//! * `wasi:http` outgoing requests fail with `HTTP-request-denied`, noted on stderr;
//! * stdin is empty; stdout and stderr are captured (see `output`), bounded;
//! * clocks (wall and monotonic) and random bytes work, as in any sandbox.

use super::log::truncate;
use super::output::Captured;
use crate::runtime::PluginName;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// WASI resources one invocation may hold at once (a Python or JavaScript runtime uses
/// a handful: its stdio streams, a few pollables).
const MAX_RESOURCES: usize = 1000;
/// Headers of one `wasi:http` fields resource (requests are refused anyway).
const HTTP_FIELDS_BYTES: usize = 16 << 10;
/// Denied requests logged one by one per invocation; the rest are counted once.
const DENIALS_LOGGED: usize = 3;

/// One invocation's WASI state.
pub struct Wasi {
    ctx: WasiCtx,
    http: WasiHttpCtx,
    hooks: DeniedHttp,
    table: ResourceTable,
    /// The plugin's version (the start of its SHA-256), for the log.
    version: Arc<str>,
    pub stdout: Captured,
    pub stderr: Captured,
}

impl Wasi {
    pub fn new(plugin: PluginName, version: Arc<str>, output_bytes: usize) -> Self {
        let (stdout, stderr) = (Captured::new(output_bytes), Captured::new(output_bytes));
        let ctx = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        // Resources (streams, HTTP fields, ...) are host memory the guest makes with host
        // calls, which cpu_time does not count: bound them.
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(HTTP_FIELDS_BYTES);
        Self {
            ctx,
            http,
            hooks: DeniedHttp {
                plugin,
                stderr: stderr.clone(),
                denied: 0,
            },
            table,
            version,
            stdout,
            stderr,
        }
    }

    pub fn output(&self) -> super::output::GuestOutput {
        super::output::GuestOutput {
            stdout: self.stdout.text(),
            stderr: self.stderr.text(),
        }
    }

    pub fn view(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }

    pub fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Log events per stream and invocation; the rest are counted in one line.
const LOGGED_LINES: usize = 200;

impl super::HostState {
    /// Writes what the guest printed to the host's log, line by line: stdout at `info`,
    /// stderr at `warn`.
    pub fn log_guest_output(&self) {
        let event_id = self.event_id.as_deref().unwrap_or("-");
        let version = &self.wasi.version;
        for (stream, captured) in [("stdout", &self.wasi.stdout), ("stderr", &self.wasi.stderr)] {
            let Some(text) = captured.text() else {
                continue;
            };
            let lines: Vec<&str> = text
                .lines()
                .filter(|line| !line.trim().is_empty())
                .collect();
            // The bytes are bounded by `output_bytes`; the log events are bounded too, so
            // a guest printing one character per line cannot flood the log.
            let skipped = lines.len().saturating_sub(LOGGED_LINES);
            let shown = lines[..LOGGED_LINES.min(lines.len())]
                .iter()
                .map(|line| (*line).to_string())
                .chain((skipped > 0).then(|| format!("[... {skipped} more lines not logged ...]")));
            for line in shown {
                if stream == "stdout" {
                    tracing::info!(target: "plugin", plugin = %self.plugin, version = %version, event_id, stream, "{line}");
                } else {
                    tracing::warn!(target: "plugin", plugin = %self.plugin, version = %version, event_id, stream, "{line}");
                }
            }
        }
        let denied = self.wasi.hooks.denied;
        if denied > DENIALS_LOGGED {
            tracing::warn!(target: "plugin", plugin = %self.plugin, version = %version, event_id, denied,
                "the plugin sent {denied} outgoing HTTP requests, all denied ({DENIALS_LOGGED} logged)");
        }
    }
}

impl WasiView for super::HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.wasi.view()
    }
}

impl WasiHttpView for super::HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        self.wasi.http()
    }
}

/// Refuses every outgoing request; the refusal is logged and written to the guest's
/// stderr, so it shows in the reason of whatever fails next.
struct DeniedHttp {
    plugin: PluginName,
    stderr: Captured,
    denied: usize,
}

type Sent = Box<
    dyn std::future::Future<
            Output = Result<
                (
                    hyper::Response<wasmtime_wasi_http::WasiBody>,
                    Box<
                        dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>>
                            + Send,
                    >,
                ),
                wasmtime_wasi_http::Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for DeniedHttp {
    fn send_request(
        &mut self,
        request: hyper::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Sent {
        self.denied += 1;
        if self.denied <= DENIALS_LOGGED {
            let target = truncate(format!("{} {}", request.method(), request.uri()), 256);
            tracing::warn!(target: "plugin", plugin = %self.plugin, request = %target, "outgoing HTTP request denied: plugins are granted no network");
            self.stderr.push(
                format!("eventhost: outgoing HTTP request {target} denied: plugins are granted no network\n")
                    .as_bytes(),
            );
        }
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}
