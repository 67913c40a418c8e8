// Commstime over Go's unbuffered channels: the network of the
// `csp.commstime.*` rows (Prefix -> Delta -> Succ -> Consumer, Delta
// sequential), one goroutine per process. Built and run by the comparison
// benchmark (benches/compare/go.rs); prints the nanoseconds per channel
// communication (four per cycle), timed in the consumer after a warm-up.
//
// Usage: commstime CYCLES
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

const warm = 100

func prefix(in <-chan uint64, out chan<- uint64) {
	out <- 0
	for {
		out <- <-in
	}
}

func delta(in <-chan uint64, out1, out2 chan<- uint64) {
	for {
		x := <-in
		out1 <- x
		out2 <- x
	}
}

func succ(in <-chan uint64, out chan<- uint64) {
	for {
		out <- <-in + 1
	}
}

func consumer(in <-chan uint64, n int) float64 {
	for i := 0; i < warm; i++ {
		<-in
	}
	t0 := time.Now()
	for i := 0; i < n; i++ {
		<-in
	}
	return float64(time.Since(t0).Nanoseconds()) / float64(4*n)
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: commstime CYCLES")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[1])
	if err != nil || n <= 0 {
		fmt.Fprintln(os.Stderr, "commstime: CYCLES must be a positive integer")
		os.Exit(2)
	}
	a, b, c, d := make(chan uint64), make(chan uint64), make(chan uint64), make(chan uint64)
	go prefix(c, a)
	go delta(a, b, d)
	go succ(b, c)
	// The consumer runs on the main goroutine; the others are abandoned
	// blocked when the program exits.
	fmt.Printf("%.3f\n", consumer(d, n))
}
