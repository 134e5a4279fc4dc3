//! The W3C Trace Context `traceparent` (https://www.w3.org/TR/trace-context/): version 00,
//! a 16-byte trace id, an 8-byte parent span id and flags, as lowercase hex.

/// Where a span sits: its trace, its own id, and whether the trace is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

/// The `traceparent` text is exactly this long.
const TRACEPARENT_LEN: usize = 55;

impl TraceContext {
    /// Parses a `traceparent` header. Anything but a well-formed version-00 value with
    /// non-zero ids is `None`: a bad value starts a new trace, it is never stored or passed on.
    pub fn parse(text: &str) -> Option<TraceContext> {
        let text = text.trim();
        if text.len() != TRACEPARENT_LEN {
            return None;
        }
        let mut parts = text.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" {
            return None;
        }
        let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if ![trace, span, flags].iter().all(|s| lower_hex(s)) {
            return None;
        }
        let mut ctx = TraceContext {
            trace_id: [0; 16],
            span_id: [0; 8],
            flags: 0,
        };
        hex::decode_to_slice(trace, &mut ctx.trace_id).ok()?;
        hex::decode_to_slice(span, &mut ctx.span_id).ok()?;
        let mut f = [0u8; 1];
        hex::decode_to_slice(flags, &mut f).ok()?;
        ctx.flags = f[0];
        if ctx.trace_id == [0; 16] || ctx.span_id == [0; 8] {
            return None;
        }
        Some(ctx)
    }

    /// A context at the root of a new, sampled trace.
    pub fn new_root() -> TraceContext {
        TraceContext {
            trace_id: nonzero(),
            span_id: nonzero(),
            flags: 1,
        }
    }

    /// A new span in this one's trace, with its flags.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            span_id: nonzero(),
            ..*self
        }
    }

    /// The trace is sampled: its spans are exported.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The `traceparent` text.
    pub fn header(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            self.flags
        )
    }
}

fn nonzero<const N: usize>() -> [u8; N] {
    loop {
        let bytes: [u8; N] = rand::random();
        if bytes != [0; N] {
            return bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_good_traceparent_round_trips() {
        let ctx = TraceContext::parse(GOOD).unwrap();
        assert!(ctx.sampled());
        assert_eq!(ctx.header(), GOOD);
        let child = ctx.child();
        assert_eq!(child.trace_id, ctx.trace_id);
        assert_ne!(child.span_id, ctx.span_id);
        assert!(
            !TraceContext::parse(&GOOD.replace("-01", "-00"))
                .unwrap()
                .sampled()
        );
    }

    #[test]
    fn hostile_traceparents_are_refused() {
        for bad in [
            "",
            "garbage",
            &GOOD.to_uppercase(),
            &GOOD.replace("00-4b", "01-4b"),
            &GOOD.replace("00-4b", "ff-4b"),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1é",
            &"a".repeat(10_000),
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn roots_are_sampled_and_distinct() {
        let (a, b) = (TraceContext::new_root(), TraceContext::new_root());
        assert!(a.sampled() && b.sampled());
        assert_ne!(a.trace_id, b.trace_id);
        assert_eq!(TraceContext::parse(&a.header()), Some(a));
    }
}
