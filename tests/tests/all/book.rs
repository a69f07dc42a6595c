//! The book's generated reference pages (the ISA reference, the device configurations, the
//! optimizer's rule table) must match what their tables generate now; `UPDATE_EXPECT=1`
//! rewrites them.

use accelc_tests::repo_root;

#[test]
fn generated_pages_are_up_to_date() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut pages = accelc_isa::book::pages();
    pages.push(("compiler/rules.md", accelc_compiler::opt::rules::book_page()));
    for (rel, contents) in pages {
        let path = repo_root().join("book/src").join(rel);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == contents {
            continue;
        }
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, contents).unwrap();
        } else {
            panic!(
                "{} is stale: run `UPDATE_EXPECT=1 cargo test -p accelc-tests book`",
                path.display()
            );
        }
    }
}

#[test]
fn every_mnemonic_has_a_section() {
    let page = accelc_isa::book::instructions();
    for op in accelc_isa::inst::OPS {
        assert!(page.contains(&format!("## `{}`", op.mnemonic)));
    }
}
