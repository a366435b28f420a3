// Command flowbench measures flowd against the baselines a user would
// otherwise pick, side by side in one run, and prints a table: each
// figure, its baseline, the median of the per-run ratios, the target and
// whether it is met. docs/bench.md shows the latest table.
//
//	go run ./cmd/flowbench            # the sizes the issue states (a few minutes)
//	go run ./cmd/flowbench -quick     # smaller sizes, a minute or two
//	go run ./cmd/flowbench -only 1,5  # some items only
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"time"
)

// flowdGOGC is cmd/flowd's DefaultGOGC.
const flowdGOGC = 400

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "flowbench:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("flowbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	runs := fs.Int("runs", 5, "repetitions of each comparison; the table shows the median ratio")
	quick := fs.Bool("quick", false, "smaller sizes, so the whole table takes a minute or two")
	only := fs.String("only", "", "comma-separated item numbers to run (1-9); empty runs all")
	dir := fs.String("dir", "", "directory for the temporary databases (default the system temp dir); put it on the disk flowd would use")
	quiet := fs.Bool("q", false, "print only the table, not each run's figures")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	memprofile := fs.String("memprofile", "", "write a heap profile at the end to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; see flowbench -h", fs.Args())
	}
	b := &Bench{Sizes: FullSizes, Runs: *runs, Dir: *dir, Progress: stderr}
	if *quick {
		b.Sizes = QuickSizes
	}
	if *quiet {
		b.Progress = nil
	}
	if *only != "" {
		b.Only = map[string]bool{}
		for _, it := range strings.Split(*only, ",") {
			it = strings.TrimSpace(it)
			if len(it) != 1 || it[0] < '1' || it[0] > '9' {
				return fmt.Errorf("-only: %q is not an item number 1 to 9", it)
			}
			b.Only[it] = true
		}
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return fmt.Errorf("create CPU profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("start CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	// The engine runs here as flowd runs it, with GOGC=400 (cmd/flowd's
	// DefaultGOGC); GOGC in the environment measures with another.
	gc := "GOGC=" + os.Getenv("GOGC")
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(flowdGOGC)
		gc = fmt.Sprintf("GOGC=%d as flowd runs (set GOGC to measure another)", flowdGOGC)
	}

	begin := time.Now()
	fmt.Fprintf(stdout, "flowbench: %d runs per comparison, %s sizes, GOMAXPROCS=%d, %s/%s, %s, %s\n",
		b.Runs, map[bool]string{true: "quick", false: "full"}[*quick], runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, runtime.Version(), gc)
	rows, err := b.Run(ctx)
	if len(rows) > 0 {
		if perr := Print(stdout, rows); perr != nil {
			err = errors.Join(err, perr)
		}
	}
	fmt.Fprintf(stdout, "took %s\n", time.Since(begin).Round(time.Second))
	if *memprofile != "" {
		f, ferr := os.Create(*memprofile)
		if ferr != nil {
			return errors.Join(err, fmt.Errorf("create heap profile: %w", ferr))
		}
		defer f.Close()
		runtime.GC()
		if werr := pprof.WriteHeapProfile(f); werr != nil {
			err = errors.Join(err, fmt.Errorf("write heap profile: %w", werr))
		}
	}
	return err
}
