package ingest

import (
	"errors"

	"github.com/netsampler/goflow2/v2/decoders/netflow"
)

// MaxTemplates bounds the templates one exporter may define (over all its
// observation domains): a real router uses a handful; a datagram stream
// defining new ones without end must not grow memory without end.
const MaxTemplates = 1024

var errTooManyTemplates = errors.New("exporter defines too many templates")

// templates is one exporter's NetFlow v9 and IPFIX templates, keyed by
// version, observation domain and template ID. It implements goflow2's
// NetFlowTemplateSystem without its locks: one reader goroutine owns it.
type templates map[uint64]any

var _ netflow.NetFlowTemplateSystem = templates(nil)

func templateKey(version uint16, domain uint32, id uint16) uint64 {
	return uint64(version)<<48 | uint64(domain)<<16 | uint64(id)
}

func (t templates) AddTemplate(version uint16, domain uint32, id uint16, tmpl any) error {
	k := templateKey(version, domain, id)
	if _, ok := t[k]; !ok && len(t) >= MaxTemplates {
		return errTooManyTemplates
	}
	t[k] = tmpl
	return nil
}

func (t templates) GetTemplate(version uint16, domain uint32, id uint16) (any, error) {
	if tmpl, ok := t[templateKey(version, domain, id)]; ok {
		return tmpl, nil
	}
	return nil, netflow.ErrorTemplateNotFound
}

func (t templates) RemoveTemplate(version uint16, domain uint32, id uint16) (any, error) {
	k := templateKey(version, domain, id)
	tmpl, ok := t[k]
	if !ok {
		return nil, netflow.ErrorTemplateNotFound
	}
	delete(t, k)
	return tmpl, nil
}

func (t templates) GetTemplates() netflow.FlowBaseTemplateSet {
	out := make(netflow.FlowBaseTemplateSet, len(t))
	for k, v := range t {
		out[k] = v
	}
	return out
}
