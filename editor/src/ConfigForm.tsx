/** A node's config form, generated from its type's JSON Schema (the schema the server validates with). */
import Form from '@rjsf/core';
import {
  getDefaultFormState,
  type RJSFSchema,
  type TitleFieldProps,
  type UiSchema,
  type WidgetProps,
} from '@rjsf/utils';
import validator from '@rjsf/validator-ajv8';
import { stable } from './flowModel';
import { useMemo, useRef } from 'react';
import type { JsonSchema } from './types';

/** Secret references ({"$secret": name}) travel through the form as this marker, so the field stays a string. */
const SECRET_MARK = '\u0000secret:';

type Json = unknown;

/** pydantic writes Optional[X] as anyOf [X, null]; the form shows it as an X that may be left empty. */
export function formSchema(schema: Json): Json {
  if (Array.isArray(schema)) return schema.map(formSchema);
  if (!schema || typeof schema !== 'object') return schema;
  const node = Object.fromEntries(Object.entries(schema).map(([k, v]) => [k, formSchema(v)])) as Record<string, Json>;
  const anyOf = node.anyOf as Record<string, Json>[] | undefined;
  if (Array.isArray(anyOf) && anyOf.length === 2 && anyOf.some((s) => s.type === 'null')) {
    const { anyOf: _drop, ...rest } = node;
    const other = anyOf.find((s) => s.type !== 'null')!;
    return typeof other.type === 'string' ? { ...other, ...rest, type: [other.type, 'null'] } : { ...other, ...rest };
  }
  return node;
}

function mapSecrets(value: Json, into: (v: Json) => Json | undefined): Json {
  const replaced = into(value);
  if (replaced !== undefined) return replaced;
  if (Array.isArray(value)) return value.map((v) => mapSecrets(v, into));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, mapSecrets(v, into)]));
  }
  return value;
}

const toForm = (config: Json): Json =>
  mapSecrets(config, (v) => {
    const ref = v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, Json>).$secret : undefined;
    return typeof ref === 'string' ? SECRET_MARK + ref : undefined;
  });

const fromForm = (data: Json): Json =>
  mapSecrets(data, (v) => (typeof v === 'string' && v.startsWith(SECRET_MARK) ? { $secret: v.slice(SECRET_MARK.length) } : undefined));

const isObject = (v: Json): v is Record<string, Json> => !!v && typeof v === 'object' && !Array.isArray(v);

/** What a new node's config starts as: the form's defaults for the fields the server requires (it has no default
 * of its own for them), so what the form shows for those is what is saved. */
export function requiredDefaults(schema: JsonSchema): Record<string, unknown> {
  const form = formSchema(schema) as RJSFSchema;
  const filled = getDefaultFormState(validator, form, {}, form) as Record<string, unknown>;
  const required = new Set((form.required as string[] | undefined) ?? []);
  return Object.fromEntries(Object.entries(filled ?? {}).filter(([key]) => required.has(key)));
}

/** The form fills every default in; keep only what the user set or changed, so versions diff by intent, and
 * the required fields it shows (the server has no default for them: dropping them would refuse the deploy). */
function withoutFilledDefaults(data: Json, original: Json, filled: Json, required: Set<string> = new Set()): Json {
  if (Array.isArray(data)) {
    return data.map((v, i) => withoutFilledDefaults(v, Array.isArray(original) ? original[i] : undefined,
      Array.isArray(filled) ? filled[i] : undefined));
  }
  if (!isObject(data)) return data;
  const kept: Record<string, Json> = {};
  for (const [key, value] of Object.entries(data)) {
    const given = isObject(original) && key in original;
    const defaulted = isObject(filled) ? filled[key] : undefined;
    if (value === undefined || (!given && !required.has(key) && stable(value) === stable(defaulted))) continue;
    kept[key] = withoutFilledDefaults(value, isObject(original) ? original[key] : undefined, defaulted);
  }
  return kept;
}

/** Masked input; a stored secret is never sent to the browser, so it shows by name until replaced. */
function SecretWidget({ id, value, onChange, readonly, disabled }: WidgetProps) {
  const stored = typeof value === 'string' && value.startsWith(SECRET_MARK) ? value.slice(SECRET_MARK.length) : null;
  return (
    <input
      id={id}
      className="form-control"
      type="password"
      autoComplete="new-password"
      value={stored === null ? (value ?? '') : ''}
      placeholder={stored === null ? '' : `stored secret "${stored}" (type to replace)`}
      readOnly={readonly}
      disabled={disabled}
      onChange={(e) => onChange(e.target.value === '' && stored !== null ? value : e.target.value)}
    />
  );
}

/** Array items are numbered "Signals 1", "Signals 2"; a list of plain values shows no label per item. */
function TitleField({ id, title, required }: TitleFieldProps) {
  return (
    <legend id={id}>
      {title.replace(/-(\d+)$/, ' $1')}
      {required && <span className="required">*</span>}
    </legend>
  );
}

function uiSchemaFor(schema: Json, root: Json = schema): UiSchema {
  const node = schema as Record<string, Json> | undefined;
  if (!node || typeof node !== 'object') return {};
  const ref = typeof node.$ref === 'string' ? node.$ref.replace('#/$defs/', '') : null;
  const resolved = ref ? ((root as Record<string, Record<string, Json>>).$defs?.[ref] as Record<string, Json>) : node;
  const ui: UiSchema = {};
  for (const [key, prop] of Object.entries((resolved?.properties as Record<string, Json>) ?? {})) {
    const p = prop as Record<string, Json>;
    const items = p.items as Record<string, Json> | undefined;
    if (p.type === 'array' && items && !items.$ref && items.type !== 'object') ui[key] = { items: { 'ui:label': false } };
    else if (p.type === 'array' && items) ui[key] = { items: uiSchemaFor(items, root) };
    else if (p.$ref || p.type === 'object') ui[key] = uiSchemaFor(p, root);
  }
  return ui;
}

export function ConfigForm(props: {
  nodeId: string;
  schema: JsonSchema;
  config: Record<string, unknown>;
  readonly: boolean;
  onChange: (config: Record<string, unknown>) => void;
}) {
  const schema = useMemo(() => formSchema(props.schema) as RJSFSchema, [props.schema]);
  const ui = useMemo(() => ({ ...uiSchemaFor(schema), 'ui:submitButtonOptions': { norender: true } }), [schema]);
  const required = useMemo(() => new Set((schema.required as string[] | undefined) ?? []), [schema]);
  const formData = useMemo(() => toForm(props.config), [props.config]);
  // What the form shows for the config as it was when opened: defaults filled in where nothing was given.
  const opened = useRef(formData);
  const filled = useMemo(() => getDefaultFormState(validator, schema, opened.current, schema), [schema]);
  // The form reports a change when it fills in defaults on opening; only what the user does is an edit.
  const touched = useRef(false);
  const touch = () => (touched.current = true);
  return (
    <div onInputCapture={touch} onClickCapture={touch} onChangeCapture={touch} onKeyDownCapture={touch}>
    <Form
      key={props.nodeId}
      idPrefix={`cfg-${props.nodeId}`}
      schema={schema}
      uiSchema={ui}
      templates={{ TitleFieldTemplate: TitleField }}
      formData={formData}
      validator={validator}
      widgets={{ PasswordWidget: SecretWidget }}
      liveValidate="onChange"
      showErrorList={false}
      readonly={props.readonly}
      onChange={(event) => {
        if (!touched.current) return;
        const edited = withoutFilledDefaults(event.formData, opened.current, filled, required);
        props.onChange(fromForm(edited) as Record<string, unknown>);
      }}
    />
    </div>
  );
}
