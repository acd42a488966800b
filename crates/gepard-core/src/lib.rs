//! Domain types of gepard: tenancy keys, refs, API keys, the job state machine and progress-event types. No I/O.
