package main

import (
	"bytes"
	"io"
	"text/tabwriter"
)

// table aligns columns with text/tabwriter and, on Flush, drops the
// padding tabwriter leaves at the end of rows whose last cells are empty,
// so output has no trailing blanks to trip up diff or grep.
type table struct {
	*tabwriter.Writer
	buf bytes.Buffer
	out io.Writer
}

// newTable returns a table writing to w with gap spaces between columns.
func newTable(w io.Writer, gap int) *table {
	t := &table{out: w}
	t.Writer = tabwriter.NewWriter(&t.buf, 0, 0, gap, ' ', 0)
	return t
}

// Flush aligns what was written and copies it to the output.
func (t *table) Flush() error {
	if err := t.Writer.Flush(); err != nil {
		return err
	}
	lines := bytes.SplitAfter(t.buf.Bytes(), []byte("\n"))
	for _, l := range lines {
		nl := bytes.HasSuffix(l, []byte("\n"))
		l = bytes.TrimRight(l, " \n")
		if nl {
			l = append(l, '\n')
		}
		if _, err := t.out.Write(l); err != nil {
			return err
		}
	}
	t.buf.Reset()
	return nil
}
