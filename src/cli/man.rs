//! The man page (`crown man`), generated from the same clap definition as `--help`.

use super::{LOG_HELP, command};

/// The man page (roff): the top-level page, then one section per visible subcommand with its
/// synopsis, description and options, then the environment that sets the log filter.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let mut cmd = command();
    cmd.build();
    let top = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    top.render_title(&mut out)?;
    top.render_name_section(&mut out)?;
    top.render_synopsis_section(&mut out)?;
    top.render_description_section(&mut out)?;
    top.render_options_section(&mut out)?;
    let visible = |c: &clap::Command| !c.is_hide_set() && c.get_name() != "help";
    let mut subs: Vec<(String, &clap::Command)> = vec![];
    let mut top: Vec<&clap::Command> = cmd.get_subcommands().filter(|s| visible(s)).collect();
    top.sort_by_key(|s| s.get_display_order());
    for sub in top {
        let name = format!("crown {}", sub.get_name());
        // Nested commands (`crown once reset`) get their own sections after their parent.
        let nested: Vec<(String, &clap::Command)> = sub
            .get_subcommands()
            .filter(|s| visible(s))
            .map(|s| (format!("{name} {}", s.get_name()), s))
            .collect();
        subs.push((name, sub));
        subs.extend(nested);
    }
    for (name, sub) in subs {
        out.extend_from_slice(format!(".SH \"{}\"\n", name.to_uppercase()).as_bytes());
        let man = clap_mangen::Man::new(sub.clone().bin_name(&name));
        let mut part = Vec::new();
        man.render_synopsis_section(&mut part)?;
        man.render_description_section(&mut part)?;
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(&mut part)?;
        }
        // The subcommand's own sections become subsections of its section.
        let part = String::from_utf8_lossy(&part).replace("\n.SH ", "\n.SS ");
        let part = part
            .strip_prefix(".SH ")
            .map_or(part.clone(), |p| format!(".SS {p}"));
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(b".SH ENVIRONMENT\n");
    roff_paragraph(&mut out, LOG_HELP);
    roff_paragraph(
        &mut out,
        "Every flag that a deployment sets has a variable, named in its description \
         (CROWN_*, POD_NAME, ETCD_*; ETCDCTL_* as fallbacks for the etcd flags).",
    );
    out.extend_from_slice(b".SH \"EXIT STATUS\"\n");
    roff_paragraph(
        &mut out,
        "0 success; 1 internal error; 2 bad flags; 3 invalid configuration; 4 backend \
         unavailable; 5 corrupt stored state; 6 leadership lost with --on-loss exit; 7 the \
         backend denied a verb (Kubernetes RBAC); 8 not leader within --wait; with a child and \
         --on-child-exit exit, the child's code (with --once: 0 once the duty is done, by this \
         participant or another).",
    );
    Ok(out)
}

/// One roff paragraph of plain text (a leading `.` or `'` escaped; backslashes doubled).
fn roff_paragraph(out: &mut Vec<u8>, text: &str) {
    let text = text.replace('\\', "\\e");
    out.extend_from_slice(b".PP\n");
    for line in text.split('\n') {
        if line.starts_with('.') || line.starts_with('\'') {
            out.extend_from_slice(b"\\&");
        }
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
}
