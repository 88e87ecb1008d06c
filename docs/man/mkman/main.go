// Command mkman builds the man pages vhqos(8) and vhqos-qos.toml(5) from
// the project's own Markdown, so that they cannot drift from it:
//
//	go run ./docs/man/mkman [-C REPO] [-o build/man] [-version V] [-date YYYY-MM-DD]
//
// Each page has a layout, docs/man/PAGE.md, a text/template that holds what
// a man page has and the README lacks (NAME, the commands' OPTIONS, EXIT
// STATUS, FILES, SEE ALSO) and pulls the rest out of README.md and
// policy/REFERENCE.md by section title. A section a layout names that is
// not there (renamed, removed) is an error, not a silently shorter page;
// so is a section of a document the layout reads that it neither takes
// nor leaves out by name (a new README section needs a decision). The
// reader of a man page has the Debian package, not the repository: the
// repository's files a page names are written as what the package installs
// in their place (installed), and a name of the repository that is left
// (a test's file, a make target) is an error. The assembled Markdown is
// converted to roff by github.com/cpuguy83/go-md2man. The pages are built,
// never committed: `make man` writes them to build/man, `make deb`
// packages them.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"text/template"

	"github.com/cpuguy83/go-md2man/v2/md2man"
)

// pages are the man pages built, by file name; each has the layout
// docs/man/NAME.md.
func pages() []string { return []string{"vhqos.8", "vhqos-qos.toml.5"} }

func main() {
	repo := flag.String("C", ".", "the repository (where README.md is)")
	out := flag.String("o", "build/man", "where the pages are written")
	version := flag.String("version", "dev", "the version the pages' footer names")
	date := flag.String("date", "", "the date the pages' footer names (YYYY-MM-DD); empty: none")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "mkman: no arguments expected; see -h")
		os.Exit(2)
	}
	if err := build(*repo, *out, meta{Version: *version, Date: *date}); err != nil {
		fmt.Fprintln(os.Stderr, "mkman:", err)
		os.Exit(1)
	}
}

// meta is what the layouts may use besides the documents.
type meta struct {
	Version string
	Date    string
}

// build writes every page into out.
func build(repo, out string, m meta) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", out, err)
	}
	for _, p := range pages() {
		roff, err := render(repo, p, m)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, p), roff, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", p, err)
		}
	}
	return nil
}

// render builds one page: its layout filled in, the repository's paths
// made the installed ones, then converted to roff.
func render(repo, page string, m meta) ([]byte, error) {
	md, err := assemble(repo, page, m)
	if err != nil {
		return nil, err
	}
	md = toInstalled(md)
	if left, err := repoNames(repo, md); err != nil {
		return nil, err
	} else if len(left) > 0 {
		return nil, fmt.Errorf("%s names what only the repository has, not the package: %s (write what the package installs, map it in mkman's installed, or leave that text out of the page)", page, strings.Join(left, ", "))
	}
	return md2man.Render(tablesToLists(md)), nil
}

// installed maps the repository's files the pages name to what the Debian
// package (dist/deb/nfpm.yaml) installs in their place.
func installed() map[string]string {
	return map[string]string{
		"policy/REFERENCE.md":               "**vhqos-qos.toml**(5)",
		"README.md":                         "`/usr/share/doc/vhqos/README.md.gz`",
		"docs/benchmarks.md":                "`/usr/share/doc/vhqos/benchmarks.md.gz`",
		"docs/design-notes.md":              "`/usr/share/doc/vhqos/design-notes.md.gz`",
		"demo/qos.toml":                     "`/usr/share/doc/vhqos/examples/demo.toml`",
		"policy/testdata/example.toml":      "`/usr/share/doc/vhqos/examples/example.toml`",
		"dist/qos.toml":                     "`/etc/vhqos/qos.toml`",
		"dist/vhqos@.service":               "`/lib/systemd/system/vhqos@.service`",
		"dist/prometheus/vhqos-rules.yml":   "`/usr/share/vhqos/prometheus/vhqos-rules.yml`",
		"dist/grafana/vhqos-dashboard.json": "`/usr/share/vhqos/grafana/vhqos-dashboard.json`",
	}
}

// toInstalled writes each repository file installed names, quoted in
// backquotes or not, as what the package installs.
func toInstalled(md []byte) []byte {
	inst := installed()
	var names []string
	for name := range inst {
		names = append(names, name)
	}
	// Longest first: README.md is also the end of other names.
	sort.Slice(names, func(i, j int) bool { return len(names[i]) > len(names[j]) })
	text := string(md)
	for _, name := range names {
		to := inst[name]
		text = strings.ReplaceAll(text, "`"+name+"`", to)
		bare := regexp.MustCompile(`(^|[^\w/.-])` + regexp.QuoteMeta(name) + `($|[^\w/-])`)
		text = bare.ReplaceAllString(text, "${1}"+strings.ReplaceAll(to, "$", "$$")+"${2}")
	}
	return []byte(text)
}

// repoNames finds what in md names the repository rather than an
// installed system: a path under one of its top-level directories
// (itest/..., cmd/...), one of its Markdown files, a make target.
func repoNames(repo string, md []byte) ([]string, error) {
	entries, err := os.ReadDir(repo)
	if err != nil {
		return nil, fmt.Errorf("listing the repository: %w", err)
	}
	var dirs, files []string
	for _, e := range entries {
		switch {
		case e.Name() == ".git" || e.Name() == ".cache":
		case e.IsDir():
			dirs = append(dirs, regexp.QuoteMeta(e.Name()))
		case strings.HasSuffix(e.Name(), ".md"):
			files = append(files, regexp.QuoteMeta(e.Name()))
		}
	}
	targets, err := makeTargets(repo)
	if err != nil {
		return nil, err
	}
	// A name counts at the start of a word: /usr/share/doc/vhqos/README.md.gz
	// and /sys/fs/cgroup/memory are not the repository's; ./cgroup (a go
	// command's package) is.
	pattern := `(?:^|[\s(\x60"'*])((?:` + strings.Join(dirs, "|") + `)/[\w.@/-]*|\./(?:` + strings.Join(dirs, "|") + `)\b`
	if len(files) > 0 {
		pattern += `|(?:` + strings.Join(files, "|") + `)\b`
	}
	if len(targets) > 0 {
		pattern += `|make (?:` + strings.Join(targets, "|") + `)\b`
	}
	pattern += `)`
	seen := map[string]bool{}
	var found []string
	for _, m := range regexp.MustCompile(pattern).FindAllStringSubmatch(string(md), -1) {
		if !seen[m[1]] {
			seen[m[1]] = true
			found = append(found, m[1])
		}
	}
	return found, nil
}

// makeTargets are the Makefile's phony targets: "make deb" in a page is
// the repository's, "make room" is not.
func makeTargets(repo string) ([]string, error) {
	data, err := os.ReadFile(filepath.Join(repo, "Makefile"))
	if err != nil {
		return nil, fmt.Errorf("reading the Makefile for its targets: %w", err)
	}
	m := regexp.MustCompile(`(?m)^\.PHONY:(.*)$`).FindAllStringSubmatch(string(data), -1)
	var targets []string
	for _, line := range m {
		for _, t := range strings.Fields(line[1]) {
			targets = append(targets, regexp.QuoteMeta(t))
		}
	}
	return targets, nil
}

// tablesToLists rewrites each Markdown table as a definition list: a row's
// first cell is the term, each other cell a paragraph of its own led by its
// column's heading. A four-column table of sentences does not fit 80
// columns (tbl warns, "table wider than line width", and breaks words
// mid-cell); a list reads as man pages usually do.
func tablesToLists(md []byte) []byte {
	lines := strings.Split(string(md), "\n")
	var out []string
	fenced := false
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if strings.HasPrefix(line, "```") || strings.HasPrefix(line, "~~~") {
			fenced = !fenced
		}
		if fenced || !isRow(line) || i+1 >= len(lines) || !isDelimiterRow(lines[i+1]) {
			out = append(out, line)
			continue
		}
		head := cells(line)
		i += 2
		for ; i < len(lines) && isRow(lines[i]); i++ {
			row := cells(lines[i])
			if len(row) == 0 {
				continue
			}
			out = append(out, row[0])
			for j := 1; j < len(row); j++ {
				if row[j] == "" {
					continue
				}
				label := ""
				if j < len(head) && head[j] != "" {
					label = "*" + head[j] + "*: "
				}
				out = append(out, ":   "+label+row[j])
			}
			out = append(out, "")
		}
		i--
	}
	return []byte(strings.Join(out, "\n"))
}

// isRow reports whether line is a row of a Markdown table (GitHub's
// syntax, with leading and trailing pipes, as the project writes them).
func isRow(line string) bool {
	t := strings.TrimSpace(line)
	return len(t) > 1 && strings.HasPrefix(t, "|") && strings.HasSuffix(t, "|")
}

// isDelimiterRow reports whether line is the |---|:--:| row under a
// table's heading.
func isDelimiterRow(line string) bool {
	if !isRow(line) {
		return false
	}
	for _, c := range cells(line) {
		if strings.Trim(c, ":-") != "" || !strings.Contains(c, "-") {
			return false
		}
	}
	return true
}

// cells splits a table row at its pipes; an escaped pipe (\|) stays in
// its cell.
func cells(line string) []string {
	t := strings.TrimSpace(line)
	t = t[1 : len(t)-1]
	var row []string
	var cur strings.Builder
	for i := 0; i < len(t); i++ {
		switch {
		case t[i] == '\\' && i+1 < len(t) && t[i+1] == '|':
			cur.WriteString(`\|`)
			i++
		case t[i] == '|':
			row = append(row, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(t[i])
		}
	}
	return append(row, strings.TrimSpace(cur.String()))
}

// assemble fills in the layout of page with sections of the repository's
// Markdown files.
func assemble(repo, page string, m meta) ([]byte, error) {
	layout := filepath.Join("docs", "man", page+".md")
	text, err := os.ReadFile(filepath.Join(repo, layout))
	if err != nil {
		return nil, fmt.Errorf("reading the layout of %s: %w", page, err)
	}
	docs := map[string]*document{}
	load := func(name string) (*document, error) {
		if d, ok := docs[name]; ok {
			return d, nil
		}
		raw, err := os.ReadFile(filepath.Join(repo, name))
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", name, err)
		}
		d := parse(name, string(raw))
		docs[name] = d
		return d, nil
	}
	funcs := template.FuncMap{
		// intro FILE FROM: the text before the file's first section,
		// from its first line that starts with FROM ("" for all of it).
		"intro": func(file, from string) (string, error) {
			d, err := load(file)
			if err != nil {
				return "", err
			}
			return d.introFrom(from)
		},
		// code FILE TITLE: the first indented code block of a section.
		"code": func(file, title string) (string, error) {
			d, err := load(file)
			if err != nil {
				return "", err
			}
			return d.code(title)
		},
		// section FILE TITLE [SUBSECTION...]: a section's text, without
		// its heading, and without the subsections ("### ") named.
		"section": func(file, title string, except ...string) (string, error) {
			d, err := load(file)
			if err != nil {
				return "", err
			}
			s, err := d.section(title)
			if err != nil {
				return "", err
			}
			d.used[title] = true
			return s.without(d.name, except)
		},
		// subsection FILE TITLE SUBSECTION: a subsection's text, without
		// its heading. The section it is in still needs a decision.
		"subsection": func(file, title, sub string) (string, error) {
			d, err := load(file)
			if err != nil {
				return "", err
			}
			s, err := d.section(title)
			if err != nil {
				return "", err
			}
			return s.subsection(d.name, sub)
		},
		// leftOut FILE TITLE...: sections this page does not have, by
		// decision; it prints nothing.
		"leftOut": func(file string, titles ...string) (string, error) {
			d, err := load(file)
			if err != nil {
				return "", err
			}
			for _, t := range titles {
				if _, err := d.section(t); err != nil {
					return "", fmt.Errorf("leaving out a section: %w", err)
				}
				d.used[t] = true
			}
			return "", nil
		},
		// sections FILE EXCEPT...: every section but those named, each
		// a man page section (its title in capitals); their own
		// subsections stay subsections.
		"sections": func(file string, except ...string) (string, error) {
			d, err := load(file)
			if err != nil {
				return "", err
			}
			return d.sectionsExcept(except)
		},
	}
	tmpl, err := template.New(layout).Funcs(funcs).Option("missingkey=error").Parse(string(text))
	if err != nil {
		return nil, fmt.Errorf("reading the layout of %s: %w", page, err)
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, m); err != nil {
		return nil, fmt.Errorf("building %s: %w", page, err)
	}
	for _, d := range docs {
		var undecided []string
		for _, t := range d.titles() {
			if !d.used[t] {
				undecided = append(undecided, fmt.Sprintf("%q", t))
			}
		}
		if len(undecided) > 0 {
			sort.Strings(undecided)
			return nil, fmt.Errorf("building %s: %s has sections the layout neither takes nor leaves out: %s (add them to {{section}} or {{leftOut}} in %s)", page, d.name, strings.Join(undecided, ", "), layout)
		}
	}
	return b.Bytes(), nil
}

// document is a Markdown file cut at its second-level headings ("## ").
type document struct {
	name     string
	intro    []string // lines before the first section, its title left out
	sections []*section
	// used are the titles of the sections a layout took or left out.
	used map[string]bool
}

// section is one "## " heading and the lines up to the next.
type section struct {
	title string
	lines []string
}

// parse cuts a Markdown file into its introduction and sections. A heading
// is a line starting with "#" outside a fenced code block; indented code
// cannot hold one (it starts with spaces).
func parse(name, text string) *document {
	d := &document{name: name, used: map[string]bool{}}
	fenced := false
	var cur *section
	for _, line := range strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n") {
		if strings.HasPrefix(line, "```") || strings.HasPrefix(line, "~~~") {
			fenced = !fenced
		}
		switch {
		case !fenced && strings.HasPrefix(line, "## "):
			cur = &section{title: strings.TrimSpace(strings.TrimPrefix(line, "## "))}
			d.sections = append(d.sections, cur)
		case !fenced && strings.HasPrefix(line, "# ") && cur == nil && len(d.intro) == 0:
			// The document's own title: the page has its own.
		case cur != nil:
			cur.lines = append(cur.lines, line)
		default:
			d.intro = append(d.intro, line)
		}
	}
	return d
}

func (d *document) section(title string) (*section, error) {
	for _, s := range d.sections {
		if s.title == title {
			return s, nil
		}
	}
	return nil, fmt.Errorf("%s has no section %q (it has: %s)", d.name, title, strings.Join(d.titles(), "; "))
}

func (d *document) titles() []string {
	var t []string
	for _, s := range d.sections {
		t = append(t, s.title)
	}
	return t
}

func (d *document) introFrom(from string) (string, error) {
	for i, line := range d.intro {
		if strings.HasPrefix(line, from) {
			return trimBlank(d.intro[i:]), nil
		}
	}
	return "", fmt.Errorf("%s: no line before its first section starts with %q", d.name, from)
}

// code returns the first indented code block of a section, still
// indented, so that it stays a code block where it is put.
func (d *document) code(title string) (string, error) {
	s, err := d.section(title)
	if err != nil {
		return "", err
	}
	start := -1
	for i, line := range s.lines {
		indented := strings.HasPrefix(line, "    ") || strings.HasPrefix(line, "\t")
		if start < 0 && indented && (i == 0 || strings.TrimSpace(s.lines[i-1]) == "") {
			start = i
		}
		if start >= 0 && !indented && strings.TrimSpace(line) != "" {
			return trimBlank(s.lines[start:i]), nil
		}
	}
	if start >= 0 {
		return trimBlank(s.lines[start:]), nil
	}
	return "", fmt.Errorf("%s: section %q has no code block", d.name, title)
}

func (d *document) sectionsExcept(except []string) (string, error) {
	for _, e := range except {
		if _, err := d.section(e); err != nil {
			return "", fmt.Errorf("leaving out a section: %w", err)
		}
	}
	var b strings.Builder
	for _, s := range d.sections {
		d.used[s.title] = true
		if slices.Contains(except, s.title) {
			continue
		}
		fmt.Fprintf(&b, "# %s\n\n%s\n\n", strings.ToUpper(s.title), s.text())
	}
	if b.Len() == 0 {
		return "", errors.New(d.name + ": no sections left")
	}
	return b.String(), nil
}

func (s *section) text() string { return trimBlank(s.lines) }

// subsections cuts a section at its "### " headings: the text before the
// first, then each subsection with its heading line. Fenced code cannot
// hold one.
func (s *section) subsections() (lead []string, subs []*section) {
	fenced := false
	var cur *section
	for _, line := range s.lines {
		if strings.HasPrefix(line, "```") || strings.HasPrefix(line, "~~~") {
			fenced = !fenced
		}
		switch {
		case !fenced && strings.HasPrefix(line, "### "):
			cur = &section{title: strings.TrimSpace(strings.TrimPrefix(line, "### ")), lines: []string{line}}
			subs = append(subs, cur)
		case cur != nil:
			cur.lines = append(cur.lines, line)
		default:
			lead = append(lead, line)
		}
	}
	return lead, subs
}

// without is the section's text less the subsections named.
func (s *section) without(doc string, except []string) (string, error) {
	lead, subs := s.subsections()
	for _, e := range except {
		if !slices.ContainsFunc(subs, func(sub *section) bool { return sub.title == e }) {
			return "", fmt.Errorf("leaving out a subsection: %s has no subsection %q in %q", doc, e, s.title)
		}
	}
	lines := lead
	for _, sub := range subs {
		if !slices.Contains(except, sub.title) {
			lines = append(append(lines, ""), sub.lines...)
		}
	}
	return trimBlank(lines), nil
}

// subsection is the text of the subsection called title, without its
// heading.
func (s *section) subsection(doc, title string) (string, error) {
	_, subs := s.subsections()
	for _, sub := range subs {
		if sub.title == title {
			return trimBlank(sub.lines[1:]), nil
		}
	}
	return "", fmt.Errorf("%s has no subsection %q in %q", doc, title, s.title)
}

// trimBlank joins lines, leaving out blank lines at either end.
func trimBlank(lines []string) string {
	for len(lines) > 0 && strings.TrimSpace(lines[0]) == "" {
		lines = lines[1:]
	}
	for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
		lines = lines[:len(lines)-1]
	}
	return strings.Join(lines, "\n")
}
