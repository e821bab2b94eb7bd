//! allocscope's error type. Every message says what was wrong and what is
//! accepted, so that a user can fix it without reading the source.

/// Errors of allocscope's fallible operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument or configuration value outside what is accepted.
    #[error("invalid {what} {value:?}: expected {expected}")]
    InvalidArgument {
        /// What was being set (a key, a parameter).
        what: &'static str,
        /// The value that was given.
        value: String,
        /// What is accepted instead.
        expected: &'static str,
    },
    /// The sampler's limits can only be changed before its first sample.
    #[error("the heap sampler has already recorded samples; set its limits before the first sample (e.g. first thing in main, or with the sample interval at 0)")]
    SamplerStarted,
    /// The sampler was busy recording a sample; the call can be retried.
    #[error("the heap sampler is busy; try again")]
    SamplerBusy,
    /// An I/O error while writing a profile or starting a service.
    #[error("{context}: {source}")]
    Io {
        /// What allocscope was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A configuration file that could not be read or parsed, or that holds
    /// a key allocscope does not know.
    #[error("configuration {origin}: {message}")]
    Config {
        /// Where the problem is: the file, or the environment.
        origin: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The exporter could not listen on its address (in use, not local,
    /// not permitted).
    #[error(
        "cannot listen on {addr}: {source} (set `addr` in the configuration or \
         ALLOCSCOPE_ADDR to a free address; 127.0.0.1:0 picks any free port)"
    )]
    Bind {
        /// The address that was asked for.
        addr: std::net::SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A profile could not be rendered in the requested format.
    #[error(
        "could not render the {what}: {message}; the folded stacks (`HeapProfile::folded`) \
         still carry the data, please report this to allocscope"
    )]
    Render {
        /// The format being rendered (e.g. "flamegraph SVG").
        what: &'static str,
        /// What the renderer reported.
        message: String,
    },
}
