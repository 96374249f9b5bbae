// Command gotmpl renders an Ollama chat template with Go's own text/template, the way
// Ollama's template package (template/template.go, Template.Execute) does for /api/chat:
// option missingkey=zero, the `json` function, consecutive same-role messages collated
// with "\n\n", every system message joined into .System, and the values map a
// Messages-style template receives.
//
// Input on stdin (JSON): {"template": "...", "conversations": [[{"role","content"}, ...], ...]}
// Output on stdout (JSON): ["rendered conversation 1", ...]
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
)

// Message mirrors the fields of Ollama's api.Message a template can read.
type Message struct {
	Role      string   `json:"role"`
	Content   string   `json:"content"`
	Thinking  string   `json:"thinking,omitempty"`
	Images    []string `json:"images,omitempty"`
	ToolCalls []any    `json:"tool_calls,omitempty"`
	ToolName  string   `json:"tool_name,omitempty"`
}

type request struct {
	Template      string      `json:"template"`
	Conversations [][]Message `json:"conversations"`
}

var funcs = template.FuncMap{
	"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	},
}

// collate merges consecutive messages of one role and gathers the system messages.
func collate(msgs []Message) (string, []*Message) {
	var system []string
	var collated []*Message
	for i := range msgs {
		if msgs[i].Role == "system" {
			system = append(system, msgs[i].Content)
		}
		if len(collated) > 0 && collated[len(collated)-1].Role == msgs[i].Role && msgs[i].Role != "tool" {
			collated[len(collated)-1].Content += "\n\n" + msgs[i].Content
		} else {
			collated = append(collated, &msgs[i])
		}
	}
	return strings.Join(system, "\n\n"), collated
}

func render(tmpl *template.Template, msgs []Message) (string, error) {
	system, messages := collate(msgs)
	var out bytes.Buffer
	err := tmpl.Execute(&out, map[string]any{
		"System":      system,
		"Messages":    messages,
		"Tools":       nil,
		"Response":    "",
		"Think":       false,
		"ThinkLevel":  "",
		"IsThinkSet":  false,
		"Query":       "",
		"Document":    "",
		"Instruction": "",
	})
	return out.String(), err
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "gotmpl: bad input:", err)
		os.Exit(2)
	}
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(req.Template)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gotmpl: template does not parse:", err)
		os.Exit(1)
	}
	rendered := make([]string, 0, len(req.Conversations))
	for i, conversation := range req.Conversations {
		text, err := render(tmpl, conversation)
		if err != nil {
			fmt.Fprintf(os.Stderr, "gotmpl: conversation %d: %v\n", i, err)
			os.Exit(1)
		}
		rendered = append(rendered, text)
	}
	if err := json.NewEncoder(os.Stdout).Encode(rendered); err != nil {
		fmt.Fprintln(os.Stderr, "gotmpl: write:", err)
		os.Exit(1)
	}
}
