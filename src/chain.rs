//! An error and its causes, outermost first: the one walk down a `source()` chain that the
//! error line, the broken-pipe test and the cluster's timeout test share.

use std::error::Error;

/// `e`, then its source, then that one's source, and so on.
pub fn chain<'a>(
    e: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> + 'a {
    std::iter::successors(Some(e), |&e| e.source())
}

/// The error line of a chain, `what: why: why`, as anyhow's `{:#}` prints one; a cause whose
/// text the line already holds (a message that names its own cause) is not repeated.
pub fn line(e: &(dyn Error + 'static)) -> String {
    let mut text = String::new();
    for cause in chain(e) {
        let said = cause.to_string();
        if text.is_empty() {
            text = said;
        } else if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
    }
    text
}

/// An error shown as its innermost cause, for a message that names its cause in its own words
/// (`cannot read the kubeconfig `x` (No such file or directory (os error 2))`): the layers
/// between, which only repeat the path or "client error", are not printed. The error itself is
/// kept, typed, in `.0`.
#[derive(Debug)]
pub struct Innermost<E>(pub E);

impl<E: Error + 'static> std::fmt::Display for Innermost<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match chain(&self.0).last() {
            Some(innermost) => write!(f, "{innermost}"),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Its text is the innermost cause already: the chain below it is not printed again.
impl<E: Error + 'static> Error for Innermost<E> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer ({0})")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn the_chain_is_walked_outermost_first_and_a_cause_already_said_is_not_repeated() {
        let e = Outer(Inner(std::io::Error::other("disk on fire")));
        let texts: Vec<String> = chain(&e).map(ToString::to_string).collect();
        assert_eq!(texts, ["outer (inner)", "inner", "disk on fire"]);
        assert_eq!(line(&e), "outer (inner): disk on fire");
    }
}
