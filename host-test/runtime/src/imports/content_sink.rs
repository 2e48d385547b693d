//! `content-sink`: where `stream-record` writes the bytes it reads.

use crate::bindings::content_sink::{Host, SinkError};
use crate::runtime::TenantState;

impl Host for TenantState {
    fn write(&mut self, chunk: Vec<u8>) -> Result<(), SinkError> {
        self.stats.host_calls += 1;
        self.touch();
        let cap = self.tenant.services.http.settings().max_body_bytes;
        if chunk.len() as u64 > cap {
            // The contract bounds a chunk by `limits.max-response-body`.
            self.touch();
            return Err(SinkError::Storage(format!(
                "a chunk of {} bytes exceeds the host's limit of {cap} bytes",
                chunk.len()
            )));
        }
        let Some(sink) = self.tenant.sink.as_mut() else {
            return Err(SinkError::Closed(
                "this invocation has no content sink".into(),
            ));
        };
        let result = sink.write_all(&chunk).map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => SinkError::Closed(e.to_string()),
            _ => SinkError::Storage(e.to_string()),
        });
        self.touch();
        result
    }
}
