//! zk-wait's reading of the answers to `srvr` and `ruok`, on any bytes a server (or whatever
//! listens at its address) may send: no panic, and what ends in the log stays short.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zk_wait::four_letter::{Reply, Word, parse_reply};

/// `unexpected` keeps 60 characters; `escape_debug` writes one as at most 10 (`\u{10ffff}`),
/// and an ellipsis marks the cut.
const MAX_EXCERPT_CHARS: usize = 60 * 10 + 1;

fuzz_target!(|answer: &[u8]| {
    for word in [Word::Srvr, Word::Ruok] {
        let reply = parse_reply(word, answer);
        assert_eq!(
            matches!(reply, Reply::Empty),
            answer.is_empty(),
            "{word}: Empty means no byte came"
        );
        match &reply {
            Reply::Unexpected { excerpt } => {
                let chars = excerpt.chars().count();
                assert!(
                    chars <= MAX_EXCERPT_CHARS,
                    "{word}: excerpt of {chars} characters"
                );
                // The excerpt is printed as is: escaping leaves no control character in it.
                assert!(
                    !excerpt.chars().any(char::is_control),
                    "{word}: control character in excerpt {excerpt:?}"
                );
            }
            Reply::NotWhitelisted { word: refused } => assert!(
                refused.len() == 4 && refused.bytes().all(|b| b.is_ascii_lowercase()),
                "{word}: refused word {refused:?}"
            ),
            Reply::Serving { mode, version } => {
                assert_eq!(word, Word::Srvr, "only srvr reports a mode");
                assert!(!mode.to_string().is_empty(), "{word}: empty mode");
                assert!(
                    version.as_ref().is_none_or(|v| !v.is_empty()),
                    "{word}: empty version"
                );
            }
            Reply::Imok => assert_eq!(word, Word::Ruok, "only ruok answers imok"),
            Reply::NotServing | Reply::Empty => {}
        }
    }
});
