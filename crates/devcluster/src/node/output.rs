//! A pod's output as the agent keeps it: the last [`PodOutput::LIMIT`] bytes, in the order the
//! process wrote them (stdout and stderr share one pipe).
//!
//! A kubelet writes container output to a log file and rotates it at 10 MiB
//! (`containerLogMaxSize`); `kubectl logs` then shows only the current file. The agent keeps
//! output in memory, so it bounds it the same way: past the limit the oldest bytes go, cut at a
//! line boundary when there is one near the cut, and what stays is the newest output. The count
//! of bytes dropped is kept, so a follower (`pods/log?follow=true`) that knows how much it has
//! sent can carry on from the right place.

/// The output kept for one pod.
#[derive(Debug, Clone, Default)]
pub struct PodOutput {
    /// The newest output, at most [`PodOutput::LIMIT`] bytes.
    tail: Vec<u8>,
    /// Bytes written before `tail`'s first byte (dropped).
    dropped: u64,
}

impl PodOutput {
    /// The most kept per pod: a kubelet's default `containerLogMaxSize`, 10 MiB.
    pub const LIMIT: usize = 10 << 20;

    /// What is dropped at least at once when over the limit (so a process writing without end
    /// costs one copy of the tail per MiB written, not per write).
    const DROP_AT_LEAST: usize = 1 << 20;

    /// How far past the cut a line boundary is looked for.
    const LINE_SEARCH: usize = 64 << 10;

    /// Appends what the process wrote, dropping the oldest output past [`Self::LIMIT`].
    pub fn append(&mut self, bytes: &[u8]) {
        // More than the limit at once: only its end can stay.
        let bytes = if bytes.len() > Self::LIMIT {
            let skipped = bytes.len() - Self::LIMIT;
            self.dropped += (self.tail.len() + skipped) as u64;
            self.tail.clear();
            &bytes[skipped..]
        } else {
            bytes
        };
        if self.tail.len() + bytes.len() > Self::LIMIT {
            let over = self.tail.len() + bytes.len() - Self::LIMIT;
            let mut cut = over.max(Self::DROP_AT_LEAST).min(self.tail.len());
            // Start the kept output at a line's beginning, if one is near.
            let search_end = (cut + Self::LINE_SEARCH).min(self.tail.len());
            if let Some(newline) = self.tail[cut..search_end].iter().position(|&b| b == b'\n') {
                cut += newline + 1;
            }
            self.tail.drain(..cut);
            self.dropped += cut as u64;
        }
        self.tail.extend_from_slice(bytes);
    }

    /// The output kept (the newest, at most [`Self::LIMIT`] bytes).
    pub fn bytes(&self) -> &[u8] {
        &self.tail
    }

    /// How many bytes were written before the first one kept.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_under_the_limit_is_kept_whole() {
        let mut output = PodOutput::default();
        output.append(b"start\n");
        output.append(b"end!\n");
        assert_eq!(output.bytes(), b"start\nend!\n");
        assert_eq!(output.dropped(), 0);
    }

    #[test]
    fn endless_output_keeps_the_newest_tail_within_the_limit_from_a_line_start() {
        let mut output = PodOutput::default();
        let mut written = 0u64;
        for i in 0..1_000_000u32 {
            let line = format!("line {i:08}\n");
            output.append(line.as_bytes());
            written += line.len() as u64;
            assert!(output.bytes().len() <= PodOutput::LIMIT);
        }
        assert_eq!(output.dropped() + output.bytes().len() as u64, written);
        assert!(output.bytes().starts_with(b"line "), "cut at a line start");
        assert!(
            output.bytes().ends_with(b"line 00999999\n"),
            "the newest kept"
        );
        assert!(output.bytes().len() >= PodOutput::LIMIT - PodOutput::DROP_AT_LEAST - 64);
    }

    #[test]
    fn one_write_beyond_the_limit_keeps_its_end() {
        let mut output = PodOutput::default();
        output.append(b"old");
        let mut big = vec![b'x'; PodOutput::LIMIT + 10];
        big.extend_from_slice(b"END");
        output.append(&big);
        assert_eq!(output.bytes().len(), PodOutput::LIMIT);
        assert!(output.bytes().ends_with(b"xxEND"));
        assert_eq!(output.dropped(), 3 + 13);
    }
}
