// A ring of N goroutines over Go's unbuffered channels passing a token
// round LAPS times: the network of the `csp.ring.light` row. Built and run
// by the comparison benchmark (benches/compare/go.rs); sends the token
// round once (every goroutine is running by then), then prints the
// nanoseconds per hop of the LAPS timed laps, and exits with status 1 if
// a hop went missing.
//
// Usage: ring N LAPS
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

func relay(in <-chan uint64, out chan<- uint64) {
	for {
		out <- <-in + 1
	}
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: ring N LAPS")
		os.Exit(2)
	}
	n, err1 := strconv.Atoi(os.Args[1])
	laps, err2 := strconv.Atoi(os.Args[2])
	if err1 != nil || err2 != nil || n < 2 || laps <= 0 {
		fmt.Fprintln(os.Stderr, "ring: N must be at least 2 and LAPS positive")
		os.Exit(2)
	}
	chans := make([]chan uint64, n)
	for i := range chans {
		chans[i] = make(chan uint64)
	}
	// The main goroutine is the ring's first process: it writes to
	// chans[0] and reads from chans[n-1].
	for k := 1; k < n; k++ {
		go relay(chans[k-1], chans[k])
	}
	first, last := chans[0], chans[n-1]
	first <- 1
	token := <-last
	t0 := time.Now()
	for i := 0; i < laps; i++ {
		first <- token + 1
		token = <-last
	}
	ns := float64(time.Since(t0).Nanoseconds()) / float64(n*laps)
	if token != uint64(n*(laps+1)) {
		fmt.Fprintf(os.Stderr, "ring: token %d after %d laps of %d, wanted %d\n", token, laps+1, n, n*(laps+1))
		os.Exit(1)
	}
	fmt.Printf("%.3f\n", ns)
}
