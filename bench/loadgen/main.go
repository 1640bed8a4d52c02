// Command loadgen is the side-by-side benchmark's MQTT load generator and counter (bench/bench_nodered.py).
//
//	loadgen pub -broker tcp://127.0.0.1:1883 -prefix bench/in -rate 8000 -duration 20s -start 0
//	loadgen sub -broker tcp://127.0.0.1:1883 -topic bench/out/# -idle 5s
//
// pub offers spec-sized JSON readings at a paced rate (QoS 1, several connections) and reports how many the broker
// acknowledged (one JSON line); sub counts the distinct sequence numbers it receives until nothing arrives for -idle
// or SIGTERM, printing its count every 500 ms and a last JSON line. Python publishers top out near 4-5k msg/s here, which is why this is Go.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

func connect(broker, id string, clean bool, handler mqtt.MessageHandler) mqtt.Client {
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID(id).SetCleanSession(clean).
		SetAutoReconnect(true).SetMaxReconnectInterval(time.Second).SetOrderMatters(false).
		SetWriteTimeout(10 * time.Second)
	if handler != nil {
		opts.SetDefaultPublishHandler(handler)
	}
	client := mqtt.NewClient(opts)
	if token := client.Connect(); token.WaitTimeout(10*time.Second) && token.Error() != nil {
		fmt.Fprintln(os.Stderr, "connect:", token.Error())
		os.Exit(1)
	}
	return client
}

func publish(args []string) {
	fs := flag.NewFlagSet("pub", flag.ExitOnError)
	broker := fs.String("broker", "tcp://127.0.0.1:1883", "broker URL")
	prefix := fs.String("prefix", "bench/in", "topic prefix; readings go to <prefix>/pump_<n>")
	rate := fs.Float64("rate", 1000, "messages per second offered")
	duration := fs.Duration("duration", 10*time.Second, "how long to offer")
	start := fs.Int64("start", 0, "first sequence number")
	clients := fs.Int("clients", 4, "connections that share the rate")
	assets := fs.Int("assets", 100, "distinct assets")
	_ = fs.Parse(args)

	var sent, acked, failed atomic.Int64
	var wg sync.WaitGroup
	began := time.Now()
	total := int64(*rate * duration.Seconds())
	for c := 0; c < *clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			client := connect(*broker, fmt.Sprintf("loadgen-%d-%d", os.Getpid(), c), true, nil)
			defer client.Disconnect(1000)
			tokens := make(chan mqtt.Token, 20000)
			var waiters sync.WaitGroup
			waiters.Add(1)
			go func() { // acknowledgements are counted as they come, so a slow broker slows nobody's pacing
				defer waiters.Done()
				for token := range tokens {
					if token.WaitTimeout(60*time.Second) && token.Error() == nil {
						acked.Add(1)
					} else {
						failed.Add(1)
					}
				}
			}()
			interval := time.Duration(float64(time.Second) * float64(*clients) / *rate)
			next := time.Now()
			for seq := *start + int64(c); seq < *start+total; seq += int64(*clients) {
				if wait := time.Until(next); wait > 0 {
					time.Sleep(wait)
				}
				next = next.Add(interval)
				at := began.Add(time.Duration(float64(seq-*start) / *rate * float64(time.Second)))
				body := fmt.Sprintf(`{"seq":%d,"value":%.3f,"unit":"bar","quality":"GOOD","ts":"%s","site":"north","line":"L2","device":"plc-07"}`,
					seq, 5+float64(seq%1000)/100, at.UTC().Format(time.RFC3339Nano))
				tokens <- client.Publish(fmt.Sprintf("%s/pump_%d", *prefix, seq%int64(*assets)), 1, false, body)
				sent.Add(1)
			}
			close(tokens)
			waiters.Wait()
		}(c)
	}
	wg.Wait()
	elapsed := time.Since(began).Seconds()
	out, _ := json.Marshal(map[string]any{"sent": sent.Load(), "acked": acked.Load(), "failed": failed.Load(),
		"elapsed_s": elapsed, "rate": float64(acked.Load()) / elapsed})
	fmt.Println(string(out))
}

var seqPattern = regexp.MustCompile(`"seq":\s*(\d+)`)

func subscribe(args []string) {
	fs := flag.NewFlagSet("sub", flag.ExitOnError)
	broker := fs.String("broker", "tcp://127.0.0.1:1883", "broker URL")
	topic := fs.String("topic", "bench/out/#", "topic filter")
	idle := fs.Duration("idle", 5*time.Second, "stop once nothing arrived for this long (after the first message)")
	limit := fs.Duration("limit", 10*time.Minute, "stop after this long in any case")
	_ = fs.Parse(args)

	var mu sync.Mutex
	seen := map[int64]struct{}{}
	var received int64
	var first, last time.Time
	handler := func(_ mqtt.Client, m mqtt.Message) {
		match := seqPattern.FindSubmatch(m.Payload())
		mu.Lock()
		defer mu.Unlock()
		received++
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		last = now
		if match != nil {
			if seq, err := strconv.ParseInt(string(match[1]), 10, 64); err == nil {
				seen[seq] = struct{}{}
			}
		}
	}
	client := connect(*broker, fmt.Sprintf("counter-%d", os.Getpid()), true, handler)
	if token := client.Subscribe(*topic, 1, nil); token.WaitTimeout(10*time.Second) && token.Error() != nil {
		fmt.Fprintln(os.Stderr, "subscribe:", token.Error())
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, "subscribed")
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	began := time.Now()
	for time.Since(began) < *limit {
		time.Sleep(500 * time.Millisecond)
		mu.Lock()
		quiet := !last.IsZero() && time.Since(last) > *idle
		progress, _ := json.Marshal(map[string]any{"progress": true, "received": received, "distinct": len(seen)})
		mu.Unlock()
		fmt.Println(string(progress)) // the harness follows the count live
		select {
		case <-stop: // the harness is done offering and waiting
			quiet = true
		default:
		}
		if quiet {
			break
		}
	}
	client.Disconnect(500)
	mu.Lock()
	defer mu.Unlock()
	span := last.Sub(first).Seconds()
	out, _ := json.Marshal(map[string]any{"received": received, "distinct": len(seen), "span_s": span,
		"first": float64(first.UnixNano()) / 1e9, "last": float64(last.UnixNano()) / 1e9})
	fmt.Println(string(out))
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen pub|sub [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "pub":
		publish(os.Args[2:])
	case "sub":
		subscribe(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, "usage: loadgen pub|sub [flags]")
		os.Exit(2)
	}
}
