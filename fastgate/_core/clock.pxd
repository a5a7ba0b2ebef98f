# The data plane's clocks. Every `start`/`end` field of a request is monotonic seconds
# (CLOCK_MONOTONIC); deadlines use the coarse clock; request times for logs and events
# are epoch milliseconds.
#
# While netio.Poller runs a batch of socket events, event_time() and event_epoch_ms()
# answer the time the batch began instead of reading the clock, as nginx's cached time
# does: a request's start and end are then its batch's, at most one batch's work early.
# Outside a batch (TLS transports, timers, call_soon callbacks) they read the clock.

cdef double monotonic() noexcept nogil          # CLOCK_MONOTONIC, s
cdef double monotonic_coarse() noexcept nogil   # same clock at the last tick (ms) or the batch's, for deadlines
cdef long long epoch_ms() noexcept nogil        # CLOCK_REALTIME, ms

cdef double event_time() noexcept nogil         # monotonic(), or the current batch's
cdef long long event_epoch_ms() noexcept nogil  # epoch_ms(), or the current batch's
cdef void batch_begin() noexcept nogil          # netio.Poller.ready, around its events
cdef void batch_end() noexcept nogil
