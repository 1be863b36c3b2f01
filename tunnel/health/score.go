package health

import (
	"fmt"
	"time"
)

// Grade is an AIM-style verdict on how well a path serves one kind of use.
//
// # Rubric
//
// The scores follow Cloudflare's Aggregated Internet Measurement (AIM)
// rubric (the @cloudflare/speedtest scoring tables). Each measured value
// earns points; a value below the first threshold earns the first points,
// and every threshold belongs to the band above it:
//
//	metric                      thresholds               points
//	loss (fraction)             0.01 0.05 0.25 0.5       10   5   0 -10 -20
//	latency (ms, median)        10 20 50 100 500         20  10   5   0 -10 -20
//	loaded-latency increase ms  10 20 50 100 500         20  10   5   0 -10 -20
//	jitter (ms)                 10 20 100 500            10   5   0 -10 -20
//	download (bit/s, p90)       1e6 10e6 50e6 100e6       0   5  10  20  30
//
// An experience adds up the points of its inputs, floors the sum at 0,
// and maps it to a grade with four thresholds (bad below the first, great
// from the last on):
//
//	experience   inputs                                      bad│poor│average│good│great
//	streaming    latency, loss, download, loaded increase     15   20    40    60
//	gaming       latency, loss, loaded increase                5   15    25    30
//	video calls  latency, jitter, loss, loaded increase        5   15    25    40
//
// What edgegw measures, from the tunnel's quality probes over the last
// [QualityWindow]:
//   - latency: the median round trip of the probes sent while the tunnel
//     was not under load;
//   - jitter: the mean absolute difference between consecutive round
//     trips;
//   - loss: the share of probes not answered within [LossTimeout];
//   - loaded-latency increase: the median round trip of probes sent while
//     the tunnel carried at least [LoadedBitrate], minus the idle median
//     (never below 0). AIM leaves an experience out when an input is
//     missing; a tunnel that has carried no load has no loaded latency,
//     and edgegw scores it with an increase of 0 rather than showing no
//     score at all (Measurement.LoadedSamples says so);
//   - download: the 90th percentile of the tunnel's throughput (both
//     directions) per 100 ms. That is what the tunnel carried, not what
//     it could carry, so the streaming grade of an idle tunnel is
//     pessimistic; no test traffic is sent to measure capacity.
type Grade int

// Grades from worst to best.
const (
	Bad Grade = iota
	Poor
	Average
	Good
	Great
)

func (g Grade) String() string {
	switch g {
	case Bad:
		return "bad"
	case Poor:
		return "poor"
	case Average:
		return "average"
	case Good:
		return "good"
	case Great:
		return "great"
	}
	return fmt.Sprintf("Grade(%d)", int(g))
}

// MarshalText makes grades read as their names in JSON.
func (g Grade) MarshalText() ([]byte, error) { return []byte(g.String()), nil }

// Scores are a path's grades per experience, and the points behind them.
type Scores struct {
	Streaming  Grade `json:"streaming"`
	Gaming     Grade `json:"gaming"`
	VideoCalls Grade `json:"video_calls"`
	// Points per experience (the sums before grading); quality steering
	// ranks paths by VideoCallsPoints.
	StreamingPoints  int `json:"streaming_points"`
	GamingPoints     int `json:"gaming_points"`
	VideoCallsPoints int `json:"video_calls_points"`
}

// band returns points[i] for the first threshold v is below, or the last
// points when v reaches every threshold.
func band(v float64, thresholds []float64, points []int) int {
	for i, t := range thresholds {
		if v < t {
			return points[i]
		}
	}
	return points[len(points)-1]
}

var (
	lossBands    = []float64{0.01, 0.05, 0.25, 0.5}
	lossPoints   = []int{10, 5, 0, -10, -20}
	latBands     = []float64{10, 20, 50, 100, 500}
	latPoints    = []int{20, 10, 5, 0, -10, -20}
	jitterBands  = []float64{10, 20, 100, 500}
	jitterPoints = []int{10, 5, 0, -10, -20}
	dlBands      = []float64{1e6, 10e6, 50e6, 100e6}
	dlPoints     = []int{0, 5, 10, 20, 30}

	streamingGrades = []float64{15, 20, 40, 60}
	gamingGrades    = []float64{5, 15, 25, 30}
	rtcGrades       = []float64{5, 15, 25, 40}
	gradeValues     = []int{int(Bad), int(Poor), int(Average), int(Good), int(Great)}
)

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Score grades m with the rubric documented on [Grade].
func Score(m Measurement) Scores {
	loss := band(m.Loss, lossBands, lossPoints)
	lat := band(ms(m.Latency), latBands, latPoints)
	inc := band(ms(max(0, m.LoadedLatency-m.Latency)), latBands, latPoints)
	if m.LoadedSamples == 0 {
		inc = band(0, latBands, latPoints)
	}
	jit := band(ms(m.Jitter), jitterBands, jitterPoints)
	dl := band(m.Throughput, dlBands, dlPoints)
	s := Scores{
		StreamingPoints:  max(0, lat+loss+dl+inc),
		GamingPoints:     max(0, lat+loss+inc),
		VideoCallsPoints: max(0, lat+jit+loss+inc),
	}
	grade := func(points int, thresholds []float64) Grade {
		return Grade(band(float64(points), thresholds, gradeValues))
	}
	s.Streaming = grade(s.StreamingPoints, streamingGrades)
	s.Gaming = grade(s.GamingPoints, gamingGrades)
	s.VideoCalls = grade(s.VideoCallsPoints, rtcGrades)
	return s
}
