//! Error text for people: an error and its causes on one line. Libraries keep the reason a
//! few sources down (hyper's top-level message is "client error", rustls's certificate
//! reason and the AWS SDK's dispatch failure sit below it), so the top message alone says
//! little. One helper for every place that reports such an error.

/// `e` and its sources joined with ": ", a cause left out when the text so far already
/// says it; bounded (chains are short: it stops after 16 links whatever they say).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    for _ in 0..16 {
        let Some(s) = source else { break };
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn causes_follow_the_error_once() {
        let inner = std::io::Error::other("certificate expired");
        let outer = std::io::Error::other(inner);
        // io::Error's Display of a custom error is the inner text: said once, not twice.
        assert_eq!(super::chain(&outer), "certificate expired");
        let e = anyhow::anyhow!("the upstream").context("client error");
        let dynerr: &dyn std::error::Error = e.as_ref();
        assert_eq!(super::chain(dynerr), "client error: the upstream");
    }
}
