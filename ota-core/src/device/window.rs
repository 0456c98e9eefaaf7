//! The window of outstanding chunk requests and their retransmission timers.

use heapless::Vec;

use crate::time::Instant;

/// One chunk requested and not yet received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outstanding {
    pub offset: u32,
    pub len: u16,
    /// When the last send went out.
    pub sent_at: Option<Instant>,
    /// When the first send went out.
    pub first_sent: Instant,
    /// When to resend if nothing arrives.
    pub due: Instant,
    pub attempts: u8,
    /// Timer doublings so far: every timeout under [`super::Congestion::Aimd`]; only timeouts
    /// on a silent path under [`super::Congestion::LossTolerant`].
    pub backoff: u8,
    /// Due again because its reply was corrupt (not because it timed out).
    pub corrupt: bool,
    /// Order of its latest send among all sends of the wake.
    pub order: u32,
    /// Earlier sends still believed in flight beside the latest: 1 after a copy sent before
    /// any sign of loss (see `Controller::on_copy`), 0 once a send is found lost.
    pub copies: u8,
}

/// Requests in flight, at most `W` (the device's `WINDOW`, at most [`super::MAX_WINDOW`]).
#[derive(Debug, Default)]
pub(crate) struct Window<const W: usize> {
    pub items: Vec<Outstanding, W>,
    /// Copies still on the link whose request another send already answered, and the latest
    /// of their timers: they count against the window until their replies come or that timer
    /// passes.
    orphans: (u8, Instant),
}

impl<const W: usize> Window<W> {
    /// Sends believed in flight at `now`: one per request, its copies, and the copies of
    /// requests already answered.
    pub fn in_flight(&self, now: Instant) -> usize {
        let own: usize = self.items.iter().map(|o| 1 + usize::from(o.copies)).sum();
        own + self.orphans(now)
    }

    /// Copies of answered requests still believed on the link at `now`.
    pub fn orphans(&self, now: Instant) -> usize {
        match self.orphans {
            (n, until) if now < until => usize::from(n),
            _ => 0,
        }
    }

    /// A chunk no request waits for arrived: the reply to an orphaned copy, most likely.
    pub fn orphan_answered(&mut self) {
        self.orphans.0 = self.orphans.0.saturating_sub(1);
    }

    /// The request to copy when a slot would otherwise stay empty: the one sent longest ago
    /// among those with no copy in flight.
    pub fn copy_candidate(&mut self) -> Option<&mut Outstanding> {
        self.items
            .iter_mut()
            .filter(|o| o.copies == 0)
            .min_by_key(|o| o.order)
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn clear(&mut self) {
        self.items.clear();
        self.orphans = (0, Instant(0));
    }

    /// Adds a request sent for the first time at `now`; `false` if the window is full.
    pub fn push(
        &mut self,
        offset: u32,
        len: u16,
        now: Instant,
        (due, order): (Instant, u32),
    ) -> bool {
        self.items
            .push(Outstanding {
                offset,
                len,
                sent_at: Some(now),
                first_sent: now,
                due,
                attempts: 1,
                backoff: 0,
                corrupt: false,
                order,
                copies: 0,
            })
            .is_ok()
    }

    /// Removes and returns the request for `offset`, if one is outstanding; a copy of it still
    /// on the link stays counted (see [`Window::in_flight`]).
    pub fn take(&mut self, offset: u32) -> Option<Outstanding> {
        let i = self.items.iter().position(|o| o.offset == offset)?;
        let o = self.items.swap_remove(i);
        if o.copies > 0 {
            // Its other send is still on the link.
            self.orphans = (
                self.orphans.0.saturating_add(o.copies),
                self.orphans.1.max(o.due),
            );
        }
        Some(o)
    }

    /// Marks the request for `offset` to be sent again at once (corrupt reply).
    pub fn resend_now(&mut self, offset: u32, now: Instant) {
        if let Some(o) = self.items.iter_mut().find(|o| o.offset == offset) {
            o.due = now;
            o.corrupt = true;
        }
    }

    /// The request to send again at `now`: the lowest offset whose timer expired.
    pub fn next_due(&mut self, now: Instant) -> Option<&mut Outstanding> {
        self.items
            .iter_mut()
            .filter(|o| o.due <= now)
            .min_by_key(|o| o.offset)
    }

    /// The earliest of the outstanding requests' latest sends.
    pub fn oldest_sent(&self) -> Option<Instant> {
        self.items.iter().filter_map(|o| o.sent_at).min()
    }

    /// The earliest retransmission deadline.
    pub fn earliest_due(&self) -> Option<Instant> {
        // Orphaned copies hold slots of the window until their timer: when they are all that
        // is left, that timer is when a slot frees.
        let orphans = (self.orphans.0 > 0).then_some(self.orphans.1);
        self.items.iter().map(|o| o.due).chain(orphans).min()
    }

    /// Forgets the orphaned copies whose timer has passed at `now`.
    pub fn expire_orphans(&mut self, now: Instant) {
        if now >= self.orphans.1 {
            self.orphans = (0, Instant(0));
        }
    }
}
