//! Suffix array construction by induced sorting (SA-IS, Nong, Zhang and Chan, 2009): linear time,
//! one `u32` per byte plus a type bit, recursion on the reduced string of LMS substrings.
//!
//! Suffixes compare as if the text ended with a sentinel smaller than every symbol.

const EMPTY: u32 = u32::MAX;

/// The suffix array of `text`: the start of every suffix, in lexicographic order.
pub fn suffix_array(text: &[u8]) -> Vec<u32> {
    let s: Vec<u32> = text.iter().map(|&b| u32::from(b)).collect();
    let mut sa = vec![0u32; s.len()];
    sais(&s, 256, &mut sa);
    sa
}

/// `lcp[r]` is the length of the common prefix of the suffixes at ranks `r - 1` and `r`
/// (`lcp[0]` = 0), by Kasai's algorithm; `rank` is the inverse of `sa`.
pub fn lcp_array(text: &[u8], sa: &[u32], rank: &[u32]) -> Vec<u32> {
    let n = text.len();
    let mut lcp = vec![0u32; n];
    let mut h = 0usize;
    for i in 0..n {
        let r = rank[i] as usize;
        if r == 0 {
            h = 0;
            continue;
        }
        let j = sa[r - 1] as usize;
        while i + h < n && j + h < n && text[i + h] == text[j + h] {
            h += 1;
        }
        lcp[r] = h as u32;
        h = h.saturating_sub(1);
    }
    lcp
}

/// Bucket boundaries: the first slot of each symbol's bucket, or one past its last.
fn buckets(counts: &[u32], ends: bool) -> Vec<u32> {
    let mut sum = 0;
    counts
        .iter()
        .map(|&c| {
            sum += c;
            if ends {
                sum
            } else {
                sum - c
            }
        })
        .collect()
}

fn sais(s: &[u32], k: usize, sa: &mut [u32]) {
    let n = s.len();
    if n == 0 {
        return;
    }
    if n == 1 {
        sa[0] = 0;
        return;
    }
    // S-type (true) or L-type (false); the last symbol is L, being greater than the sentinel.
    let mut stype = vec![false; n];
    for i in (0..n - 1).rev() {
        stype[i] = s[i] < s[i + 1] || (s[i] == s[i + 1] && stype[i + 1]);
    }
    let is_lms = |i: usize| i > 0 && stype[i] && !stype[i - 1];
    let mut counts = vec![0u32; k];
    for &c in s {
        counts[c as usize] += 1;
    }

    // 1. Sort the LMS substrings: LMS positions at their buckets' ends, then induce.
    sa.fill(EMPTY);
    let mut tail = buckets(&counts, true);
    for i in (1..n).rev() {
        if is_lms(i) {
            let c = s[i] as usize;
            tail[c] -= 1;
            sa[tail[c] as usize] = i as u32;
        }
    }
    induce(s, sa, &stype, &counts);

    // 2. Name them: equal substrings get equal names, in sorted order.
    let mut m = 0;
    for i in 0..n {
        let j = sa[i];
        if j != EMPTY && is_lms(j as usize) {
            sa[m] = j;
            m += 1;
        }
    }
    sa[m..].fill(EMPTY);
    let mut names = 0u32;
    let mut prev = EMPTY;
    for i in 0..m {
        let pos = sa[i] as usize;
        if prev == EMPTY || !lms_equal(s, &stype, prev as usize, pos) {
            names += 1;
            prev = pos as u32;
        }
        // LMS positions are at least two apart, so pos / 2 is unique and m + pos / 2 < n.
        sa[m + pos / 2] = names - 1;
    }

    // 3. Sort the LMS suffixes: directly if the names are unique, else by recursion.
    if (names as usize) < m {
        let reduced: Vec<u32> = sa[m..].iter().copied().filter(|&v| v != EMPTY).collect();
        let mut sub = vec![0u32; m];
        sais(&reduced, names as usize, &mut sub);
        let lms: Vec<u32> = (1..n).filter(|&i| is_lms(i)).map(|i| i as u32).collect();
        for i in 0..m {
            sa[i] = lms[sub[i] as usize];
        }
    }
    // 4. Induce every suffix from the sorted LMS suffixes.
    let sorted: Vec<u32> = sa[..m].to_vec();
    sa.fill(EMPTY);
    let mut tail = buckets(&counts, true);
    for &p in sorted.iter().rev() {
        let c = s[p as usize] as usize;
        tail[c] -= 1;
        sa[tail[c] as usize] = p;
    }
    induce(s, sa, &stype, &counts);
}

/// Induces L-type suffixes left to right from what is placed, then S-type right to left.
fn induce(s: &[u32], sa: &mut [u32], stype: &[bool], counts: &[u32]) {
    let n = s.len();
    let mut head = buckets(counts, false);
    // The suffix before the sentinel comes first in its bucket.
    let c = s[n - 1] as usize;
    sa[head[c] as usize] = (n - 1) as u32;
    head[c] += 1;
    for i in 0..n {
        let j = sa[i];
        if j != EMPTY && j > 0 && !stype[j as usize - 1] {
            let p = j as usize - 1;
            let c = s[p] as usize;
            sa[head[c] as usize] = p as u32;
            head[c] += 1;
        }
    }
    let mut tail = buckets(counts, true);
    for i in (0..n).rev() {
        let j = sa[i];
        if j != EMPTY && j > 0 && stype[j as usize - 1] {
            let p = j as usize - 1;
            let c = s[p] as usize;
            tail[c] -= 1;
            sa[tail[c] as usize] = p as u32;
        }
    }
}

/// Whether the LMS substrings at `a` and `b` are equal (symbols and types).
fn lms_equal(s: &[u32], stype: &[bool], a: usize, b: usize) -> bool {
    let n = s.len();
    let is_lms = |i: usize| i > 0 && stype[i] && !stype[i - 1];
    let mut d = 0;
    loop {
        let (i, j) = (a + d, b + d);
        if i == n || j == n {
            // Only one substring reaches the sentinel, which is unique.
            return false;
        }
        if s[i] != s[j] || stype[i] != stype[j] {
            return false;
        }
        if d > 0 {
            match (is_lms(i), is_lms(j)) {
                (true, true) => return true,
                (false, false) => {}
                _ => return false,
            }
        }
        d += 1;
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(text: &[u8]) -> Vec<u32> {
        let mut sa: Vec<u32> = (0..text.len() as u32).collect();
        sa.sort_by(|&a, &b| text[a as usize..].cmp(&text[b as usize..]));
        sa
    }

    #[test]
    fn examples() {
        for t in [
            &b""[..],
            b"a",
            b"banana",
            b"mississippi",
            b"aaaaaaaa",
            b"abababab",
            b"ba",
        ] {
            assert_eq!(suffix_array(t), naive(t), "{:?}", std::str::from_utf8(t));
        }
    }

    proptest! {
        #[test]
        fn matches_naive_sort(text in prop::collection::vec(0u8..4, 0..300)) {
            prop_assert_eq!(suffix_array(&text), naive(&text));
        }

        #[test]
        fn lcp_is_right(text in prop::collection::vec(0u8..3, 1..200)) {
            let sa = suffix_array(&text);
            let mut rank = vec![0u32; text.len()];
            for (r, &p) in sa.iter().enumerate() {
                rank[p as usize] = r as u32;
            }
            let lcp = lcp_array(&text, &sa, &rank);
            for r in 1..sa.len() {
                let (a, b) = (&text[sa[r - 1] as usize..], &text[sa[r] as usize..]);
                let l = a.iter().zip(b).take_while(|(x, y)| x == y).count();
                prop_assert_eq!(lcp[r] as usize, l);
            }
        }
    }
}
