//! A 3-stage CSP pipeline of OS processes, each stage returning something
//! of its own: the source sends the words of a sentence and returns how
//! many it sent (`usize`); the middle stage measures each word and returns
//! the longest one (`String`); the sink prints the lengths and returns
//! their total (`u64`). Each stage retires its output when its input is
//! retired, so the pipeline ends by itself, and `parallel!` hands back the
//! three results, each with its own type.
//!
//! ```text
//! $ cargo run --example csp_stages
//! 4
//! 5
//! 3
//! 5
//! sent 4 words, longest "quick", 17 letters
//! ```

use multiproc::csp::{Channel, ChannelError, CspProcess, Reader, Writer};

/// Stage 1: sends each word, then drops (retires) its output.
fn source(out: Writer<String>) -> Result<usize, ChannelError> {
    let words = ["over", "quick", "the", "brown"];
    for w in words {
        out.write(&w.to_string())?;
    }
    Ok(words.len())
}

/// Stage 2: passes each word's length on, remembers the longest word.
fn measure(ends: (Reader<String>, Writer<u64>)) -> Result<String, ChannelError> {
    let (inp, out) = ends;
    let mut longest = String::new();
    loop {
        match inp.read() {
            Ok(word) => {
                out.write(&(word.len() as u64))?;
                if word.len() > longest.len() {
                    longest = word;
                }
            }
            Err(ChannelError::Retired) => return Ok(longest),
            Err(e) => return Err(e),
        }
    }
}

/// Stage 3: prints each length and returns their sum.
fn sink(inp: Reader<u64>) -> Result<u64, ChannelError> {
    let mut total = 0;
    loop {
        match inp.read() {
            Ok(n) => {
                println!("{n}");
                total += n;
            }
            Err(ChannelError::Retired) => return Ok(total),
            Err(e) => return Err(e),
        }
    }
}

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let words = Channel::new()?;
    let lengths = Channel::new()?;
    let (sent, longest, total) = multiproc::parallel!(
        CspProcess::os_process(source, words.writer()),
        CspProcess::os_process(measure, (words.reader(), lengths.writer())),
        CspProcess::os_process(sink, lengths.reader()),
    )?;
    println!(
        "sent {} words, longest {:?}, {} letters",
        sent.value().unwrap_or_default(),
        longest.value().unwrap_or_default(),
        total.value().unwrap_or_default()
    );
    Ok(())
}
