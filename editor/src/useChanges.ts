/** The nodes a deploy of the edited document would restart on the gateway the view is on (else against the version
 * last deployed), asked of the server (the compiler's fingerprints, the definition the gateway deploys by), a moment
 * after each edit. */
import { useEffect, useState } from 'react';
import type { Api } from './api';
import type { FlowDocument } from './types';

const SETTLE_MS = 300;

export interface Changes {
  modified: Set<string>;
  removed: string[];
}

export function useChanges(
  api: Api,
  document: FlowDocument | null,
  gateway: string | null,
  runningVersion: number | null,
): Changes {
  const [changes, setChanges] = useState<Changes>({ modified: new Set(), removed: [] });
  // A deploy (a new running version) or another gateway changes the answer too.
  const key = document ? `${gateway}:${runningVersion}:${JSON.stringify(document)}` : '';
  useEffect(() => {
    if (!document) return;
    let current = true;
    const timer = setTimeout(() => {
      api.changes(document.id, document, gateway).then(
        (answer) => {
          if (!current) return;
          if (answer.modified !== null) setChanges({ modified: new Set(answer.modified), removed: answer.removed });
          else if (answer.deployed_version === null) {
            // Nothing runs yet: every node is new, whether or not the draft compiles.
            setChanges({ modified: new Set(document.nodes.map((n) => n.id)), removed: [] });
          } else setChanges((c) => ({ ...c, removed: answer.removed })); // does not compile: keep the last answer
        },
        () => undefined, // the next edit asks again; failures show where they matter (save, deploy)
      );
    }, SETTLE_MS);
    return () => {
      current = false;
      clearTimeout(timer);
    };
  }, [api, key]); // `key` is the document's content: a new object with the same content asks nothing

  return changes;
}
