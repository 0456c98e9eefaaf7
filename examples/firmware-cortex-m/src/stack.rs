//! Stack measurement: paint the free stack with a pattern at reset, find the deepest word
//! overwritten at the end.

const PAINT: u32 = 0x5A5A_A5A5;

extern "C" {
    static mut __ebss: u32;
    static _stack_start: u32;
}

/// Fills the unused stack (from the end of .bss to just below the current frame) with a pattern.
pub fn paint_stack() {
    let sp = cortex_m::register::msp::read() as usize - 256;
    // SAFETY: `__ebss` is the end of the statics the linker placed; between it and the current
    // stack pointer (less a margin for this function's frame) lies memory nothing owns: there
    // is no heap, and the stack grows down from `_stack_start` towards it. Writing there cannot
    // alias any Rust object. The addresses are word-aligned (the linker aligns .bss to 4).
    unsafe {
        let mut p = core::ptr::addr_of_mut!(__ebss);
        while (p as usize) < sp {
            core::ptr::write_volatile(p, PAINT);
            p = p.add(1);
        }
    }
}

/// Deepest stack use since [`paint_stack`], in bytes.
pub fn stack_high_water() -> usize {
    // SAFETY: reads the same unowned region `paint_stack` wrote, word by word, up to the first
    // word the stack has overwritten; the region is below every live frame's data it reaches
    // only through volatile reads of plain words.
    unsafe {
        let top = core::ptr::addr_of!(_stack_start) as usize;
        let mut p = core::ptr::addr_of!(__ebss);
        while (p as usize) < top && core::ptr::read_volatile(p) == PAINT {
            p = p.add(1);
        }
        top - p as usize
    }
}
