//! embassy-time on the Cortex-M SysTick, for a board no HAL crate serves (QEMU's mps2-an386):
//! a 1 kHz interrupt advances the tick count (in embassy-time's default microsecond ticks) and
//! wakes the timers that came due.

use core::cell::{Cell, RefCell};
use core::task::Waker;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::exception;
use critical_section::Mutex;
use embassy_time_driver::Driver;
use embassy_time_queue_utils::Queue;

/// mps2-an386 runs its core at 25 MHz.
const CORE_HZ: u32 = 25_000_000;
/// SysTick interrupts per second.
const TICK_HZ: u32 = 1_000;
/// embassy-time ticks (µs, its default rate) per SysTick interrupt.
const TICKS_PER_IRQ: u64 = embassy_time_driver::TICK_HZ / TICK_HZ as u64;

struct SysTickDriver {
    now: Mutex<Cell<u64>>,
    queue: Mutex<RefCell<Queue>>,
}

impl Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.now.borrow(cs).get())
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut queue = self.queue.borrow(cs).borrow_mut();
            if queue.schedule_wake(at, waker) {
                // Due already: wake it now rather than at the next interrupt.
                queue.next_expiration(self.now.borrow(cs).get());
            }
        });
    }
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    now: Mutex::new(Cell::new(0)),
    queue: Mutex::new(RefCell::new(Queue::new())),
});

#[exception]
fn SysTick() {
    critical_section::with(|cs| {
        let now = DRIVER.now.borrow(cs).get() + TICKS_PER_IRQ;
        DRIVER.now.borrow(cs).set(now);
        DRIVER.queue.borrow(cs).borrow_mut().next_expiration(now);
    });
}

/// Starts the 1 kHz tick.
pub fn start(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CORE_HZ / TICK_HZ - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}
