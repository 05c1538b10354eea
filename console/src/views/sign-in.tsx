/** Asks for what this deployment's auth needs; kept in this tab's sessionStorage only. */
import { useState } from "preact/hooks";
import type { Auth, CredentialField } from "../auth.ts";
import { ErrorMessage } from "../components.tsx";

function Field(props: { field: CredentialField; value: string; onInput: (value: string) => void }) {
  const { field } = props;
  const id = `field-${field.name}`;
  const common = {
    id,
    name: field.name,
    autocomplete: "off",
    value: props.value,
    "aria-describedby": field.hint === "" ? undefined : `${id}-hint`,
    onInput: (event: { currentTarget: HTMLInputElement }) => props.onInput(event.currentTarget.value),
  };
  return (
    <div class="field">
      <label for={id}>{field.label}</label>
      {field.secret ? (
        <input {...common} type="password" required />
      ) : (
        <input {...common} type="text" spellcheck={false} required={!field.optional} />
      )}
      {field.hint !== "" && (
        <span id={`${id}-hint`} class="hint">
          {field.hint}
        </span>
      )}
    </div>
  );
}

export function SignIn({ auth, onSignedIn }: { auth: Auth; onSignedIn: () => void }) {
  const [values, setValues] = useState<Record<string, string>>({});
  const [error, setError] = useState<unknown>();
  return (
    <section aria-labelledby="sign-in-title" class="narrow">
      <h1 id="sign-in-title">Sign in</h1>
      <p class="lead">
        {auth.mode === "key"
          ? "The local stack's keys, as `npm start` printed them."
          : "Temporary AWS credentials for the admin API, and the API key for inference."}{" "}
        They are kept in this tab only (sessionStorage) and forgotten when it closes.
      </p>
      <form
        class="panel"
        aria-label="Sign in"
        onSubmit={(event) => {
          event.preventDefault();
          try {
            auth.signIn(values);
            onSignedIn();
          } catch (caught) {
            setError(caught);
          }
        }}
      >
        {auth.fields.map((field) => (
          <Field
            key={field.name}
            field={field}
            value={values[field.name] ?? ""}
            onInput={(value) => setValues((current) => ({ ...current, [field.name]: value }))}
          />
        ))}
        <ErrorMessage error={error} title="Not signed in" />
        <div class="actions">
          <button type="submit">Sign in</button>
        </div>
      </form>
    </section>
  );
}
