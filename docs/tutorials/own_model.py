# %% [markdown]
# # own_model

# %%
print(1)
